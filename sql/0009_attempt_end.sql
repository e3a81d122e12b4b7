-- 0009: how an attempt ends, written once.
--
-- The rules that close an attempt (the contact's disposition, whether a retry is
-- scheduled and when, how the call row is finished) were written twice: in
-- dialer_apply_call_event (0007) for carrier events, and in the store's Python for a
-- dial the carrier refused. So was the adoption of a call (pending → in_progress,
-- the attempt counted). Each now has one home here, and every path calls it:
--
--   dialer_adopt_call        the carrier accepted the request (create response,
--                            callback, reconciliation): pending → in_progress with
--                            the sid, the attempt counted on the contact. Once only.
--   dialer_end_attempt       an attempt ends: call row final, contact disposition,
--                            retry row. THE place for the retry/disposition rules
--                            (docs/campaigns.md#retries); a new kind of ending (an
--                            interactive answer, a voicemail) is a new `p_ending`
--                            value here and nowhere else.
--   dialer_dial_failed       a carrier request failed, with the engine's intent:
--                            'requeue' (back to scheduled after a backoff, not an
--                            attempt), 'fail_permanent' or 'fail_retryable' (an
--                            attempt that ends at once, through dialer_end_attempt).
--   dialer_apply_call_event  replaced with the same signature and semantics as 0007,
--                            now calling the two above instead of carrying copies.
--
-- An attempt is counted exactly once: by dialer_adopt_call when the carrier accepts
-- it, or by dialer_end_attempt when it ends without ever having been accepted (a
-- request the carrier refused: the row is still `pending`).
--
-- Each function is SECURITY INVOKER (the default) with its search_path pinned, and
-- only its owner (the daemon's role, which ran the migrations) may execute it: the
-- file ends with 0008's block, which does both for every dialer_ function
-- (sql/README.md).

CREATE FUNCTION dialer_adopt_call(p_call_id uuid, p_call_sid text, p_now timestamp)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_campaign uuid;
    v_contact  uuid;
    v_dialed   timestamp;
BEGIN
    -- status = 'pending' makes this happen once, whoever sees the sid first.
    UPDATE calls SET status = 'in_progress', call_sid = p_call_sid, last_event_at = p_now
    WHERE id = p_call_id AND status = 'pending'
    RETURNING campaign_id, contact_id, coalesce(dialed_at, p_now) INTO v_campaign, v_contact, v_dialed;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE campaign_contacts cc
    SET call_status = 'in_progress', call_count = cc.call_count + 1, last_call_at = v_dialed
    WHERE cc.campaign_id = v_campaign AND cc.contact_id = v_contact;
    RETURN true;
END;
$$;

-- k: the attempt's row as it is now, locked by the caller; c: its campaign (read,
-- not locked: the campaign's counters row is locked by the trigger of the call's
-- final UPDATE below, as late as possible before commit).
-- p_status: the call row's final status (completed or failed); p_ending: what the
-- attempt means for the contact:
--   'completed'       the contact is done (completed);
--   'fail_permanent'  the number itself is wrong: invalid_number at once, no retry;
--   'fail_retryable'  a retry at ended + retry_delay_minutes while retries are left
--                     and the campaign still runs then (active or paused, before
--                     schedule_end); cancelled when retries are left but the campaign
--                     is over; failed when none is left.
-- Returns the contact's new disposition.
CREATE FUNCTION dialer_end_attempt(
    k               calls,
    c               campaigns,
    p_status        call_status,
    p_ending        text,
    p_outcome       text,
    p_ended         timestamp,
    p_started       timestamp,
    p_duration      integer,
    p_answered_by   text,
    p_error_code    integer,
    p_error_message text
)
RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    next_at     timestamp := p_ended + make_interval(mins => c.retry_delay_minutes);
    started     timestamp := coalesce(p_started, k.started_at);
    refused     boolean := k.status = 'pending';  -- never accepted: the attempt counts here
    disposition text;
    retry_at    timestamp;
BEGIN
    IF p_status NOT IN ('completed', 'failed') THEN
        RAISE EXCEPTION 'dialer_end_attempt: % is not a final status of an attempt', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CASE p_ending
        WHEN 'completed' THEN
            disposition := 'completed';
        WHEN 'fail_permanent' THEN
            disposition := 'invalid_number';
        WHEN 'fail_retryable' THEN
            IF k.retry_count < c.max_retries
               AND c.status IN ('active', 'paused')
               AND (c.schedule_end IS NULL OR next_at <= c.schedule_end) THEN
                retry_at := next_at;
                disposition := 'scheduled';
            ELSIF k.retry_count < c.max_retries THEN
                disposition := 'cancelled';  -- the campaign ended before the contact did
            ELSE
                disposition := 'failed';
            END IF;
        ELSE
            RAISE EXCEPTION 'dialer_end_attempt: unknown ending %', p_ending
                USING ERRCODE = 'invalid_parameter_value';
    END CASE;

    IF started IS NULL AND coalesce(p_duration, 0) <> 0 AND p_status = 'completed' THEN
        started := p_ended - make_interval(secs => p_duration);
    END IF;

    -- The contact, then the call: the call's UPDATE fires the counters trigger, which
    -- locks the campaign row every finishing call of the campaign needs; it comes last.
    UPDATE campaign_contacts cc
    SET call_status = disposition,
        call_count = cc.call_count + CASE WHEN refused THEN 1 ELSE 0 END,
        last_call_at = CASE WHEN refused THEN coalesce(k.dialed_at, p_ended) ELSE cc.last_call_at END
    WHERE cc.campaign_id = k.campaign_id AND cc.contact_id = k.contact_id;
    UPDATE calls SET status = p_status, outcome = p_outcome, ended_at = p_ended,
        duration = coalesce(p_duration, duration), started_at = started,
        answered_by = coalesce(p_answered_by, answered_by),
        error_code = coalesce(p_error_code, error_code),
        error_message = coalesce(p_error_message, error_message),
        last_event_at = p_ended
    WHERE id = k.id;
    IF retry_at IS NOT NULL THEN
        -- After the attempt's own row is final: calls_one_open_attempt_idx allows the
        -- next attempt only once this one is closed. ON CONFLICT: a duplicated event
        -- cannot create two (unique campaign, contact, retry_count).
        INSERT INTO calls (campaign_id, contact_id, status, retry_count, scheduled_at)
        VALUES (k.campaign_id, k.contact_id, 'scheduled', k.retry_count + 1, retry_at)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN disposition;
END;
$$;

-- A carrier request for a `pending` call failed; p_intent is the engine's decision
-- (dialer.models.DialIntent, from the carrier error's kind):
--   'requeue'         the request never reached the carrier, or was throttled: back
--                     to scheduled after 5 s doubling per such failure (at most 10
--                     minutes); no attempt is counted;
--   'fail_permanent'  refused, the number is wrong: the attempt ends (invalid_number);
--   'fail_retryable'  refused for another reason: the attempt ends, retried by the rules.
-- A call that is no longer pending (a callback adopted it meanwhile, the campaign
-- cancelled it) is left alone. Returns the call's status after this.
CREATE FUNCTION dialer_dial_failed(
    p_call_id       uuid,
    p_intent        text,
    p_outcome       text,
    p_error_code    integer,
    p_error_message text,
    p_now           timestamp
)
RETURNS call_status
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    k calls%ROWTYPE;
    c campaigns%ROWTYPE;
BEGIN
    IF p_intent NOT IN ('requeue', 'fail_permanent', 'fail_retryable') THEN
        RAISE EXCEPTION 'dialer_dial_failed: unknown intent %', p_intent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO k FROM calls WHERE id = p_call_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'cancelled';
    END IF;
    IF k.status <> 'pending' THEN
        RETURN k.status;
    END IF;
    IF p_intent = 'requeue' THEN
        UPDATE calls SET status = 'scheduled', claimed_by = NULL, claimed_at = NULL, dialed_at = NULL,
            carrier_attempts = carrier_attempts + 1,
            scheduled_at = p_now + make_interval(secs => least(600, 5 * 2 ^ least(k.carrier_attempts, 30))),
            error_code = p_error_code, error_message = p_error_message
        WHERE id = k.id;
        RETURN 'scheduled';
    END IF;
    SELECT * INTO c FROM campaigns WHERE id = k.campaign_id;
    PERFORM dialer_end_attempt(k, c, 'failed', p_intent, p_outcome, p_now, NULL, NULL, NULL,
                               p_error_code, p_error_message);
    RETURN 'failed';
END;
$$;

-- Same signature, arguments and results as 0007 (whose header describes them); the
-- adoption and the end of the attempt are now the functions above.
CREATE OR REPLACE FUNCTION dialer_apply_call_event(
    p_call_id       uuid,
    p_call_sid      text,
    p_status        text,
    p_is_final      boolean,
    p_permanent     boolean,
    p_duration      integer,
    p_answered_by   text,
    p_error_code    integer,
    p_error_message text,
    p_timestamp     timestamp,
    p_start_time    timestamp,
    p_end_time      timestamp,
    p_now           timestamp,
    OUT result       text,
    OUT call_id      uuid,
    OUT expected_sid text
)
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    k            calls%ROWTYPE;
    c            campaigns%ROWTYPE;
    found_call   boolean := false;
    new_status   call_status;
    new_outcome  text;
    ending       text;
    machine      boolean;
BEGIN
    IF p_call_id IS NOT NULL THEN
        SELECT * INTO k FROM calls WHERE id = p_call_id FOR UPDATE;
        found_call := FOUND;
    END IF;
    IF NOT found_call AND p_call_sid IS NOT NULL AND p_call_sid <> '' THEN
        SELECT * INTO k FROM calls WHERE calls.call_sid = p_call_sid FOR UPDATE;
        found_call := FOUND;
    END IF;
    IF NOT found_call THEN
        result := 'unknown';
        RETURN;
    END IF;
    call_id := k.id;
    IF k.call_sid IS NOT NULL AND k.call_sid IS DISTINCT FROM p_call_sid THEN
        result := 'sid_mismatch';
        expected_sid := k.call_sid;
        RETURN;
    END IF;
    IF k.status IN ('completed', 'failed', 'cancelled', 'scheduled') THEN
        result := 'ignored';
        RETURN;
    END IF;

    IF k.status = 'pending' THEN
        PERFORM dialer_adopt_call(k.id, p_call_sid, p_now);
        -- The row as it now is: adopted, its attempt counted.
        k.status := 'in_progress';
        k.call_sid := p_call_sid;
    END IF;

    IF NOT p_is_final THEN
        UPDATE calls SET last_event_at = p_now,
            started_at = CASE WHEN p_status = 'in-progress'
                              THEN coalesce(started_at, p_timestamp, p_now) ELSE started_at END,
            answered_by = coalesce(p_answered_by, answered_by)
        WHERE id = k.id;
        result := 'applied';
        RETURN;
    END IF;

    SELECT * INTO c FROM campaigns WHERE id = k.campaign_id;

    -- What Twilio's status says about the attempt: machine answers count as failed
    -- (and are retried) when the campaign says so.
    machine := coalesce(p_answered_by LIKE 'machine%', false);
    IF p_status = 'completed' THEN
        IF machine AND c.machine_is_failure THEN
            new_status := 'failed';
            new_outcome := 'machine';
        ELSE
            new_status := 'completed';
            new_outcome := CASE WHEN machine THEN 'machine' ELSE 'completed' END;
        END IF;
    ELSE
        new_status := 'failed';
        new_outcome := p_status;
    END IF;
    ending := CASE WHEN new_status = 'completed' THEN 'completed'
                   WHEN p_permanent THEN 'fail_permanent'
                   ELSE 'fail_retryable' END;

    PERFORM dialer_end_attempt(k, c, new_status, ending, new_outcome,
                               coalesce(p_end_time, p_timestamp, p_now), p_start_time, p_duration,
                               p_answered_by, p_error_code, p_error_message);
    result := 'applied';
END;
$$;

-- As 0008_function_privileges.sql: pinned search_path, EXECUTE for the owner only.
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
