-- 0007: a carrier event (status callback or REST fetch) applied in ONE round trip.
--
-- Applying a final event from the client cost BEGIN, SELECT … FOR UPDATE, UPDATE
-- campaign_contacts, UPDATE calls, (INSERT retry,) COMMIT: five or six round trips,
-- each a costly socket write on a loaded box, with the call row locked across all of
-- them. Run as one autocommit statement, the same work is one round trip and the
-- locks (the call row; the campaign row the counters trigger updates) are held only
-- for the statement itself.
--
-- Semantics are exactly LifecycleStore.apply_call_event's (docs/campaigns.md#retries), which the store
-- tests pin:
--   * the call is found by id, else (id absent or unknown) by its CallSid;
--   * a call whose stored sid differs from the event's is not touched;
--   * a final or a scheduled (handed-back) call is not touched: status moves forward only;
--   * a pending call is adopted first (→ in_progress with the sid; the attempt is
--     counted on the contact exactly once, here or in the create response);
--   * a non-final event stamps last_event_at, started_at (in-progress) and answered_by;
--   * a final event maps Twilio's status (machine answers count as failed when the
--     campaign says so), sets the contact's disposition (completed, invalid_number,
--     scheduled with a retry row, cancelled when the campaign is over, failed when no
--     retry is left), then the call's final UPDATE, then the retry row — after the
--     call is closed, because calls_one_open_attempt_idx allows one open attempt.
--
-- Arguments: p_is_final / p_permanent are decided by the caller (the carrier module
-- owns which statuses are final and which error codes condemn the number); times are
-- naive UTC like every column; p_now is the caller's clock (tests move it).
-- SECURITY INVOKER (the default): called by Supabase's anon or authenticated roles
-- through the REST API it sees no row (row-level security, no policies) and changes
-- nothing.
-- Returns the outcome ('applied', 'ignored', 'unknown', 'sid_mismatch'), the call's id
-- and, on a mismatch, the sid the row holds (for the caller's error line).
CREATE FUNCTION dialer_apply_call_event(
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
LANGUAGE plpgsql AS $$
DECLARE
    k            calls%ROWTYPE;
    c            campaigns%ROWTYPE;
    found_call   boolean := false;
    new_status   call_status;
    new_outcome  text;
    ended        timestamp;
    started      timestamp;
    machine      boolean;
    disposition  text;
    retry_at     timestamp;
    next_at      timestamp;
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
        -- Adoption: the only other place an attempt is counted is the create
        -- response's identical statement; status = 'pending' makes it once only.
        UPDATE calls SET status = 'in_progress', call_sid = p_call_sid, last_event_at = p_now
        WHERE id = k.id AND status = 'pending';
        UPDATE campaign_contacts cc
        SET call_status = 'in_progress', call_count = cc.call_count + 1,
            last_call_at = coalesce(k.dialed_at, p_now)
        WHERE cc.campaign_id = k.campaign_id AND cc.contact_id = k.contact_id;
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

    -- The campaign is read, not locked: its counters row is locked by the trigger
    -- of the call's final UPDATE below, as late as possible.
    SELECT * INTO c FROM campaigns WHERE id = k.campaign_id;

    ended := coalesce(p_end_time, p_timestamp, p_now);
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

    started := coalesce(p_start_time, k.started_at);
    IF started IS NULL AND coalesce(p_duration, 0) <> 0 AND new_status = 'completed' THEN
        started := ended - make_interval(secs => p_duration);
    END IF;

    IF new_status = 'completed' THEN
        disposition := 'completed';
    ELSIF p_permanent THEN
        disposition := 'invalid_number';
    ELSE
        next_at := ended + make_interval(mins => c.retry_delay_minutes);
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
    END IF;

    UPDATE campaign_contacts SET call_status = disposition
    WHERE campaign_id = k.campaign_id AND contact_id = k.contact_id;
    UPDATE calls SET status = new_status, outcome = new_outcome, ended_at = ended,
        duration = coalesce(p_duration, duration), started_at = started,
        answered_by = coalesce(p_answered_by, answered_by),
        error_code = coalesce(p_error_code, error_code),
        error_message = coalesce(p_error_message, error_message),
        last_event_at = ended
    WHERE id = k.id;
    IF retry_at IS NOT NULL THEN
        INSERT INTO calls (campaign_id, contact_id, status, retry_count, scheduled_at)
        VALUES (k.campaign_id, k.contact_id, 'scheduled', k.retry_count + 1, retry_at)
        ON CONFLICT DO NOTHING;
    END IF;
    result := 'applied';
END;
$$;
