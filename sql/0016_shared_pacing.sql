-- 0016: one dial rate for every instance sharing the database, and a rate cap per
-- campaign (docs/architecture.md#pacing, docs/invariants.md#9).
--
-- Dials go out on a grid of slots on the database's clock: slot k is k / rate seconds
-- after the Unix epoch, rate being the account's calls per second. An instance takes a
-- few free slots at a time (dialer_take_dial_slots), never more than a short horizon
-- ahead, and dials at each slot's time or lets it go. Whatever the number of
-- instances, their dials together are therefore at least 1 / rate apart; a dead
-- instance holds nothing past that horizon, and an idle one holds nothing at all.

-- What each instance brings and gets (the console's instances page shows both).
ALTER TABLE dialer_instances
    ADD COLUMN calls_per_second double precision,  -- its dialer.calls_per_second
    ADD COLUMN rate_share double precision,        -- dials per second it may count on: the account's rate over the live instances, at its last heartbeat
    ADD COLUMN dial_rate double precision;         -- dials per second it made over its last heartbeat period

-- A campaign's own cap within the account's rate; null: the account's rate only.
ALTER TABLE campaigns
    ADD COLUMN calls_per_second numeric CONSTRAINT campaigns_calls_per_second_check CHECK (calls_per_second > 0);

-- The account's grid: one row, locked by every grant, so grants queue and never
-- hand out one slot twice.
CREATE TABLE dialer_pacing (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    rate  double precision,                -- the rate `taken` is numbered at
    taken bigint[] NOT NULL DEFAULT '{}'   -- slots granted, from the current one on, ascending
);
ALTER TABLE dialer_pacing ENABLE ROW LEVEL SECURITY;
INSERT INTO dialer_pacing DEFAULT VALUES;

-- Capped campaigns: when each may dial next at its own rate.
CREATE TABLE dialer_campaign_pacing (
    campaign_id uuid PRIMARY KEY REFERENCES campaigns(id) ON DELETE CASCADE,
    next_at     double precision NOT NULL  -- seconds since the Unix epoch, database clock
);
ALTER TABLE dialer_campaign_pacing ENABLE ROW LEVEL SECURITY;

-- Up to p_want free slots of the account's grid within about p_horizon seconds from now (and,
-- for a campaign with its own calls_per_second, slots that keep to that rate too),
-- as seconds from the database's now (db_now, seconds since the Unix epoch: callers
-- map it to their own clock). The account's rate is the least
-- calls_per_second of the live instances (p_rate, the caller's, included): instances
-- that disagree dial at the lowest, never the highest. A grant is at most an equal
-- share of the horizon (rate × horizon ÷ live instances), so no instance can take it
-- all. With nothing granted, retry_after says when a slot may come within reach.
--
-- A capped campaign's slot lies on the account's grid, at most one account interval
-- before the campaign's own schedule (next_at): its dials are at least
-- 1 / cap - 1 / rate apart and average the cap exactly. A slot the campaign cannot use
-- yet is skipped, not consumed: it stays free for every other campaign.
CREATE FUNCTION dialer_take_dial_slots(
    p_campaign uuid,
    p_want integer,
    p_rate double precision,
    p_horizon double precision,
    p_live_after timestamp  -- heartbeats older than this are dead instances (the rescue's rule)
) RETURNS TABLE (db_now double precision, offsets double precision[], rate double precision,
                 campaign_rate double precision, live integer, retry_after double precision)
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_rate double precision;
    v_live integer;
    v_grid double precision;
    v_taken bigint[];
    v_now double precision;
    v_k bigint;
    v_last bigint;
    v_n integer;
    v_i integer := 1;
    v_want integer;
    v_cap double precision;
    v_next double precision;
    v_slot double precision;
    v_out bigint[] := '{}';
    v_horizon double precision;
BEGIN
    SELECT count(*)::integer, least(p_rate, min(i.calls_per_second))
      INTO v_live, v_rate
      FROM dialer_instances i
     WHERE i.stopped_at IS NULL AND i.heartbeat_at >= p_live_after;
    v_live := greatest(v_live, 1);  -- the caller, even while its own heartbeat lags

    SELECT d.rate, d.taken INTO v_grid, v_taken FROM dialer_pacing d WHERE d.id FOR UPDATE;
    -- The database's clock, read after the lock: every instance's slots are on it.
    v_now := extract(epoch FROM clock_timestamp());
    v_k := ceil(v_now * v_rate)::bigint;
    IF v_grid IS DISTINCT FROM v_rate THEN
        -- The rate changed: the new grid starts one new interval after the last slot
        -- granted on the old one (marked taken up to there).
        SELECT coalesce(max(t), 0) / coalesce(v_grid, v_rate) INTO v_slot FROM unnest(v_taken) AS t;
        v_taken := ARRAY(SELECT generate_series(v_k, ceil(v_slot * v_rate)::bigint));
    ELSE
        v_taken := ARRAY(SELECT t FROM unnest(v_taken) AS t WHERE t >= v_k ORDER BY t);
    END IF;
    v_n := cardinality(v_taken);
    v_want := least(p_want, greatest(1, ceil(v_rate * p_horizon / v_live)::integer));

    IF p_campaign IS NOT NULL THEN
        SELECT c.calls_per_second INTO v_cap FROM campaigns c WHERE c.id = p_campaign;
        IF v_cap >= v_rate THEN
            v_cap := NULL;  -- no tighter than the account's rate
        END IF;
        IF v_cap IS NOT NULL THEN
            INSERT INTO dialer_campaign_pacing (campaign_id, next_at) VALUES (p_campaign, 0)
            ON CONFLICT (campaign_id) DO NOTHING;
            SELECT p.next_at INTO v_next FROM dialer_campaign_pacing p
             WHERE p.campaign_id = p_campaign FOR UPDATE;
            v_want := least(v_want, greatest(1, ceil(v_cap * p_horizon / v_live)::integer));
        END IF;
    END IF;
    -- Shares are rounded up, so the horizon reaches one interval further per live
    -- instance: every instance holding its whole share still leaves one free for a
    -- newcomer (which would otherwise wait for a lucky moment to find one).
    v_horizon := p_horizon + v_live / coalesce(v_cap, v_rate);
    v_last := floor((v_now + v_horizon) * v_rate)::bigint;

    WHILE v_k <= v_last AND cardinality(v_out) < v_want LOOP
        WHILE v_i <= v_n AND v_taken[v_i] < v_k LOOP
            v_i := v_i + 1;
        END LOOP;
        IF v_i <= v_n AND v_taken[v_i] = v_k THEN
            v_k := v_k + 1;
            CONTINUE;
        END IF;
        v_slot := v_k / v_rate;
        IF v_cap IS NOT NULL THEN
            -- 1e-6: a microsecond of float rounding never costs the campaign a slot.
            IF v_slot < v_next - 1 / v_rate - 1e-6 THEN
                v_k := greatest(v_k + 1, ceil((v_next - 1 / v_rate - 1e-6) * v_rate)::bigint);
                CONTINUE;
            END IF;
            v_next := greatest(v_next, v_slot) + 1 / v_cap;
        END IF;
        v_out := v_out || v_k;
        v_k := v_k + 1;
    END LOOP;

    IF cardinality(v_out) > 0 THEN
        v_taken := ARRAY(SELECT t FROM unnest(v_taken || v_out) AS t ORDER BY t);
        IF v_cap IS NOT NULL THEN
            UPDATE dialer_campaign_pacing SET next_at = v_next WHERE campaign_id = p_campaign;
        END IF;
    END IF;
    UPDATE dialer_pacing SET rate = v_rate, taken = v_taken WHERE id;

    db_now := v_now;
    offsets := ARRAY(SELECT s / v_rate - v_now FROM unnest(v_out) AS s ORDER BY s);
    rate := v_rate;
    campaign_rate := v_cap;
    live := v_live;
    retry_after := CASE WHEN cardinality(v_out) > 0 THEN 0
                        ELSE greatest(0, v_k / v_rate - v_horizon - v_now) END;
    RETURN NEXT;
END;
$$;

-- Not callable by anyone but the owner (sql/README.md); same block as sql/0008.
DO $$
DECLARE
    f record;
    grantee text;
BEGIN
    FOR f IN
        SELECT p.oid, p.oid::regprocedure AS signature, n.nspname AS schema_name, p.proowner
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema()
          AND p.proname LIKE 'dialer\_%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f.signature, f.schema_name);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.signature);
        FOR grantee IN
            SELECT DISTINCT a.grantee::regrole::text
            FROM pg_proc p, aclexplode(p.proacl) AS a
            WHERE p.oid = f.oid AND a.grantee <> 0 AND a.grantee <> f.proowner
        LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', f.signature, grantee);
        END LOOP;
    END LOOP;
END;
$$;
