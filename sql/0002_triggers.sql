-- 0002: triggers that keep the data model honest whoever writes to it (the daemon,
-- the CLI, or an operator in psql / the Supabase dashboard).

-- updated_at follows every UPDATE.
CREATE FUNCTION dialer_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := timezone('utc', now());
    RETURN NEW;
END;
$$;

CREATE TRIGGER campaigns_set_updated_at BEFORE UPDATE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION dialer_set_updated_at();
CREATE TRIGGER contacts_set_updated_at BEFORE UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION dialer_set_updated_at();
CREATE TRIGGER campaign_contacts_set_updated_at BEFORE UPDATE ON campaign_contacts
    FOR EACH ROW EXECUTE FUNCTION dialer_set_updated_at();
CREATE TRIGGER calls_set_updated_at BEFORE UPDATE ON calls
    FOR EACH ROW EXECUTE FUNCTION dialer_set_updated_at();

-- A changed number or zone must be looked at again by the daemon.
CREATE FUNCTION dialer_contacts_recheck() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.phone_number IS DISTINCT FROM OLD.phone_number
       OR NEW.timezone IS DISTINCT FROM OLD.timezone THEN
        NEW.checked_at := NULL;
        NEW.number_valid := NULL;
        NEW.resolved_timezone := NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER contacts_recheck BEFORE UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION dialer_contacts_recheck();

-- A final call status never changes again.
CREATE FUNCTION dialer_calls_final_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('completed', 'failed', 'cancelled') AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'call % is final (%); it cannot become %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER calls_final_guard BEFORE UPDATE OF status ON calls
    FOR EACH ROW EXECUTE FUNCTION dialer_calls_final_guard();

-- Campaign counters (docs/invariants.md#5), true after every committed transaction: statement-level
-- triggers fold the transition tables into one delta per campaign, so a bulk
-- statement costs one UPDATE of each campaign it touched, not one per row.
CREATE FUNCTION dialer_calls_counters() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH d AS (
            SELECT campaign_id,
                   count(*) AS total,
                   count(*) FILTER (WHERE status IN ('scheduled', 'pending', 'in_progress')) AS pending,
                   count(*) FILTER (WHERE status = 'completed') AS ok,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM new_rows GROUP BY campaign_id ORDER BY campaign_id
        )
        UPDATE campaigns c
        SET total_calls = c.total_calls + d.total,
            pending_calls = c.pending_calls + d.pending,
            successful_calls = c.successful_calls + d.ok,
            failed_calls = c.failed_calls + d.failed
        FROM d WHERE c.id = d.campaign_id;
    ELSIF TG_OP = 'UPDATE' THEN
        WITH rows AS (
            SELECT campaign_id, 1 AS sign, status FROM new_rows
            UNION ALL
            SELECT campaign_id, -1 AS sign, status FROM old_rows
        ), d AS (
            SELECT campaign_id,
                   sum(sign) AS total,
                   sum(sign) FILTER (WHERE status IN ('scheduled', 'pending', 'in_progress')) AS pending,
                   sum(sign) FILTER (WHERE status = 'completed') AS ok,
                   sum(sign) FILTER (WHERE status = 'failed') AS failed
            FROM rows GROUP BY campaign_id ORDER BY campaign_id
        )
        UPDATE campaigns c
        SET total_calls = c.total_calls + d.total,
            pending_calls = c.pending_calls + coalesce(d.pending, 0),
            successful_calls = c.successful_calls + coalesce(d.ok, 0),
            failed_calls = c.failed_calls + coalesce(d.failed, 0)
        FROM d
        WHERE c.id = d.campaign_id
          AND (d.total <> 0 OR coalesce(d.pending, 0) <> 0
               OR coalesce(d.ok, 0) <> 0 OR coalesce(d.failed, 0) <> 0);
    ELSE
        WITH d AS (
            SELECT campaign_id,
                   count(*) AS total,
                   count(*) FILTER (WHERE status IN ('scheduled', 'pending', 'in_progress')) AS pending,
                   count(*) FILTER (WHERE status = 'completed') AS ok,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM old_rows GROUP BY campaign_id ORDER BY campaign_id
        )
        UPDATE campaigns c
        SET total_calls = c.total_calls - d.total,
            pending_calls = c.pending_calls - d.pending,
            successful_calls = c.successful_calls - d.ok,
            failed_calls = c.failed_calls - d.failed
        FROM d WHERE c.id = d.campaign_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER calls_counters_insert AFTER INSERT ON calls
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialer_calls_counters();
CREATE TRIGGER calls_counters_update AFTER UPDATE ON calls
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialer_calls_counters();
CREATE TRIGGER calls_counters_delete AFTER DELETE ON calls
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialer_calls_counters();

-- Wake-ups for the daemon (docs/campaigns.md#lifecycle). Payloads are ids only: no personal data
-- travels through NOTIFY.
CREATE FUNCTION dialer_notify_campaign() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dialer_campaign', NEW.id::text || ':' || NEW.status::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaigns_notify_insert AFTER INSERT ON campaigns
    FOR EACH ROW EXECUTE FUNCTION dialer_notify_campaign();
CREATE TRIGGER campaigns_notify_update AFTER UPDATE ON campaigns
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.schedule_start IS DISTINCT FROM NEW.schedule_start
          OR OLD.schedule_end IS DISTINCT FROM NEW.schedule_end
          OR OLD.calling_hours_start IS DISTINCT FROM NEW.calling_hours_start
          OR OLD.calling_hours_end IS DISTINCT FROM NEW.calling_hours_end
          OR OLD.calling_days IS DISTINCT FROM NEW.calling_days
          OR OLD.script_template IS DISTINCT FROM NEW.script_template
          OR OLD.caller_id IS DISTINCT FROM NEW.caller_id
          OR OLD.timezone IS DISTINCT FROM NEW.timezone
          OR OLD.max_concurrent_calls IS DISTINCT FROM NEW.max_concurrent_calls)
    EXECUTE FUNCTION dialer_notify_campaign();

CREATE FUNCTION dialer_notify_campaign_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cid uuid;
BEGIN
    FOR cid IN SELECT DISTINCT campaign_id FROM new_rows LOOP
        PERFORM pg_notify('dialer_contacts', cid::text);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaign_contacts_notify AFTER INSERT ON campaign_contacts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialer_notify_campaign_contacts();

-- A live call changed status: wakes the call coroutine waiting for it on whichever
-- instance holds it. Only live calls notify, so a bulk cancel of a million
-- scheduled calls does not flood the queue.
CREATE FUNCTION dialer_notify_call() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dialer_call', NEW.id::text || ':' || NEW.status::text || ':' || coalesce(NEW.outcome, ''));
    RETURN NULL;
END;
$$;

CREATE TRIGGER calls_notify AFTER UPDATE OF status ON calls
    FOR EACH ROW
    WHEN (OLD.status IN ('pending', 'in_progress') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION dialer_notify_call();
