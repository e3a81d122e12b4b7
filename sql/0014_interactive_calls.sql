-- 0014: interactive calls — a keypad menu whose answer lands in the database, in-call
-- opt-out, transfer to a person, a voicemail left after the beep, a language and a
-- voice per campaign (docs/campaigns.md#menus).
--
-- Schema:
--   campaigns.menu               jsonb: keypad key → what it does; null = a one-way call
--   campaigns.menu_repeats       how many more times the script is read when no (known)
--                                key is pressed, before the call ends as no_response
--   campaigns.retry_no_response  a no_response answer is retried like a failed attempt
--   campaigns.voicemail_template the message left on an answering machine (needs
--                                machine_detection); null = machine_is_failure decides
--   campaigns.language, voice    for every <Say> and <Gather>; null = the configuration's
--   calls.response, digits       the call's answer and every key pressed, in order
--   campaign_contacts.response, responded_at   the contact's latest answer, and when
--
-- Functions:
--   dialer_apply_key         one keypad press (a <Gather> action request), in one
--                            statement: digits, response, the contact's response and,
--                            for an opt-out, the do_not_call row — or nothing at all
--                            for a replayed, stale or late request.
--   dialer_end_attempt       replaced, from 0009's body: the response rules join the
--                            disposition rules (a new ending 'voicemail'; a completed
--                            menu call with no response is no_response, retried when
--                            the campaign says so; a recorded answer always completes).
--   dialer_apply_call_event  replaced, from 0009's body: a machine answer on a campaign
--                            with a voicemail message ends as 'voicemail'; AnsweredBy
--                            falls back to the one the row holds.

ALTER TABLE campaigns
    ADD COLUMN menu jsonb,
    ADD COLUMN menu_repeats integer NOT NULL DEFAULT 1,
    ADD COLUMN retry_no_response boolean NOT NULL DEFAULT false,
    ADD COLUMN voicemail_template text,
    ADD COLUMN language text,
    ADD COLUMN voice text,
    ADD CONSTRAINT campaigns_menu_repeats_check CHECK (menu_repeats BETWEEN 0 AND 10);

ALTER TABLE calls
    ADD COLUMN response text,
    ADD COLUMN digits text;

ALTER TABLE campaign_contacts
    ADD COLUMN response text,
    ADD COLUMN responded_at timestamp;

-- One keypad press on call p_call_id, from a <Gather> action request whose URL said
-- the call had p_keys keys recorded when its document was served (the idempotency
-- key: a replay, or a request overtaken by another, finds a different count).
--   result 'applied'      the key was recorded (digits; the response it means, if any)
--          'ignored'      nothing changed: the call is final or not yet adopted by this
--                         sid, it has answered already, the count differs, or its
--                         campaign has no menu
--          'unknown'      no such call
--          'sid_mismatch' the row holds another CallSid
-- What a key means is read from campaigns.menu (validated by the daemon before any
-- call, docs/campaigns.md#menus): 'outcome' records its label; action 'opt_out' records
-- opted_out and puts the number on do_not_call at once; 'transfer' records
-- transferred; 'repeat' and keys the menu lacks record only the key.
-- The caller renders the next TwiML from the same menu (dialer/twiml.py).
CREATE FUNCTION dialer_apply_key(
    p_call_id  uuid,
    p_call_sid text,
    p_keys     integer,
    p_digit    text,
    p_now      timestamp,
    OUT result        text,
    OUT recorded      text,
    OUT call_campaign uuid,
    OUT call_contact  uuid
)
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    k        calls%ROWTYPE;
    c        campaigns%ROWTYPE;
    entry    jsonb;
    answer   text;
BEGIN
    SELECT * INTO k FROM calls WHERE id = p_call_id FOR UPDATE;
    IF NOT FOUND THEN
        result := 'unknown';
        RETURN;
    END IF;
    call_campaign := k.campaign_id;
    call_contact := k.contact_id;
    IF k.call_sid IS NOT NULL AND k.call_sid IS DISTINCT FROM p_call_sid THEN
        result := 'sid_mismatch';
        RETURN;
    END IF;
    IF k.status NOT IN ('pending', 'in_progress') OR k.response IS NOT NULL
       OR coalesce(length(k.digits), 0) <> p_keys OR k.dialed_at IS NULL THEN
        result := 'ignored';
        RETURN;
    END IF;
    SELECT * INTO c FROM campaigns WHERE id = k.campaign_id;
    IF c.menu IS NULL OR jsonb_typeof(c.menu) <> 'object' THEN
        result := 'ignored';
        RETURN;
    END IF;
    IF k.status = 'pending' THEN
        -- The key came before the create response: the call is ours, adopt it now.
        PERFORM dialer_adopt_call(k.id, p_call_sid, p_now);
    END IF;

    entry := c.menu -> p_digit;
    IF jsonb_typeof(entry) = 'object' THEN
        IF entry ? 'outcome' THEN
            answer := entry ->> 'outcome';
        ELSIF entry ->> 'action' = 'opt_out' THEN
            answer := 'opted_out';
        ELSIF entry ->> 'action' = 'transfer' THEN
            answer := 'transferred';
        END IF;
    END IF;

    UPDATE calls SET digits = coalesce(k.digits, '') || p_digit, response = answer, last_event_at = p_now
    WHERE id = k.id;
    IF answer IS NOT NULL THEN
        UPDATE campaign_contacts cc SET response = answer, responded_at = p_now
        WHERE cc.campaign_id = k.campaign_id AND cc.contact_id = k.contact_id;
    END IF;
    IF answer = 'opted_out' THEN
        -- docs/invariants.md#8: on the list in the same transaction; every claim and
        -- every dial gate refuses the number from the moment this commits.
        INSERT INTO do_not_call (phone_number, reason)
        SELECT ct.phone_number,
               format('opted out by keypad: campaign %s (%s), call %s', c.name, c.id, k.id)
        FROM contacts ct WHERE ct.id = k.contact_id
        ON CONFLICT (phone_number) DO NOTHING;
    END IF;
    result := 'applied';
    recorded := answer;
END;
$$;

-- As 0009 (whose comments describe the arguments), plus the response rules:
--   * a response other than no_response recorded during the call (a key) means the
--     contact answered: the attempt is completed, whatever the carrier's last word;
--   * 'completed' on a menu campaign with no response recorded (no key, a key the
--     menu lacks, hung up mid-script) records no_response; with retry_no_response it
--     is retried like a failed attempt while retries are left and the campaign runs,
--     and otherwise the contact is completed (it was reached);
--   * 'voicemail' (a new ending: a machine took the campaign's message) records
--     voicemail and completes the contact.
-- A response decided here is written to the call and to the contact's campaign row
-- (response, responded_at = the end of the call) in the same statement as the rest.
CREATE OR REPLACE FUNCTION dialer_end_attempt(
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
    can_retry   boolean;
    answer      text := k.response;
    disposition text;
    retry_at    timestamp;
BEGIN
    IF p_status NOT IN ('completed', 'failed') THEN
        RAISE EXCEPTION 'dialer_end_attempt: % is not a final status of an attempt', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF answer IS NOT NULL AND answer <> 'no_response' THEN
        p_status := 'completed';  -- the contact answered: never called again (docs/campaigns.md#menus)
        p_ending := 'completed';
    END IF;
    can_retry := k.retry_count < c.max_retries
                 AND c.status IN ('active', 'paused')
                 AND (c.schedule_end IS NULL OR next_at <= c.schedule_end);
    CASE p_ending
        WHEN 'completed' THEN
            IF c.menu IS NOT NULL AND answer IS NULL THEN
                answer := 'no_response';
            END IF;
            IF answer = 'no_response' AND c.retry_no_response AND can_retry THEN
                retry_at := next_at;
                disposition := 'scheduled';
            ELSE
                disposition := 'completed';
            END IF;
        WHEN 'voicemail' THEN
            answer := 'voicemail';
            disposition := 'completed';
        WHEN 'fail_permanent' THEN
            disposition := 'invalid_number';
        WHEN 'fail_retryable' THEN
            IF can_retry THEN
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
        last_call_at = CASE WHEN refused THEN coalesce(k.dialed_at, p_ended) ELSE cc.last_call_at END,
        response = CASE WHEN answer IS DISTINCT FROM k.response THEN answer ELSE cc.response END,
        responded_at = CASE WHEN answer IS DISTINCT FROM k.response THEN p_ended ELSE cc.responded_at END
    WHERE cc.campaign_id = k.campaign_id AND cc.contact_id = k.contact_id;
    UPDATE calls SET status = p_status, outcome = p_outcome, ended_at = p_ended,
        duration = coalesce(p_duration, duration), started_at = started,
        answered_by = coalesce(p_answered_by, answered_by),
        error_code = coalesce(p_error_code, error_code),
        error_message = coalesce(p_error_message, error_message),
        response = answer,
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

-- As 0009; the final branch knows voicemail (see the header).
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

    -- What Twilio's status says about the attempt. A machine took the campaign's
    -- message when it has one (the daemon served it for that AnsweredBy, dialer/twiml.py);
    -- otherwise machine answers count as failed (and are retried) when the campaign says so.
    machine := coalesce(coalesce(p_answered_by, k.answered_by) LIKE 'machine%', false);
    ending := NULL;
    IF p_status = 'completed' THEN
        IF machine AND c.machine_detection AND c.voicemail_template IS NOT NULL THEN
            new_status := 'completed';
            new_outcome := 'machine';
            ending := 'voicemail';
        ELSIF machine AND c.machine_is_failure THEN
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
    ending := coalesce(ending, CASE WHEN new_status = 'completed' THEN 'completed'
                                    WHEN p_permanent THEN 'fail_permanent'
                                    ELSE 'fail_retryable' END);

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
