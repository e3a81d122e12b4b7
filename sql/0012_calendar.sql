-- 0012: the calendar (docs/campaigns.md#calendar, docs/invariants.md#9). Nobody is
-- called on a public holiday of the campaign's calendar or on a blackout day, judged
-- on the CONTACT'S LOCAL DATE (the zone rule of calling hours).
--
--   campaigns.holiday_calendar  a calendar of the `holidays` package: ES, ES-MD, US-CA …
--   holiday_calendars           the calendars the daemon has materialised, and the span
--                               of days each covers (a rolling window it refreshes)
--   holiday_dates               their public holidays, one row per calendar and day
--   blackout_dates              days an operator closed, for one campaign or (campaign_id
--                               NULL) for every campaign
--
--   dialer_closed_day(day, campaign, calendar)   why that local date is closed, or NULL
--   dialer_closed_dates(at_utc, campaign, calendar)
--       the closed dates among the (at most three) local dates any zone is on at that
--       instant: the day rule, asked once per instant
--   dialer_may_call(at_utc, zone, hours…, days, campaign, calendar)
--       calling hours AND a local date not among the closed dates: the test of the dial
--       gate and of the scheduler's zone pre-check. The claim writes the same two terms
--       out itself, with the closed dates taken once per statement rather than once per
--       row: a function with a pinned search_path costs a configuration change on every
--       call (tens of microseconds), and the claim evaluates its test on every row it
--       walks. tests/integration/test_calendar.py checks that the two agree.
--   dialer_next_open_day(after, campaign, calendar, days)  what `campaign status` says
--
-- A campaign that names a calendar dials only on days that calendar's window covers: a
-- calendar not (yet) materialised, or a date past its window, counts as closed. The
-- daemon fills a new calendar in its next housekeeping pass, so this only ever delays.

ALTER TABLE campaigns ADD COLUMN holiday_calendar text;

CREATE TABLE holiday_calendars (
    calendar     text PRIMARY KEY,
    first_day    date NOT NULL,
    last_day     date NOT NULL,
    refreshed_at timestamp NOT NULL DEFAULT timezone('utc', now()),
    source       text NOT NULL,  -- the library and version the dates came from
    CONSTRAINT holiday_calendars_span_check CHECK (first_day <= last_day)
);
ALTER TABLE holiday_calendars ENABLE ROW LEVEL SECURITY;

CREATE TABLE holiday_dates (
    calendar text NOT NULL REFERENCES holiday_calendars (calendar) ON DELETE CASCADE,
    day      date NOT NULL,
    name     text NOT NULL,
    PRIMARY KEY (calendar, day)
);
ALTER TABLE holiday_dates ENABLE ROW LEVEL SECURITY;

CREATE TABLE blackout_dates (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    campaign_id uuid REFERENCES campaigns (id) ON DELETE CASCADE,
    day         date NOT NULL,
    reason      text,
    created_at  timestamp NOT NULL DEFAULT timezone('utc', now())
);
ALTER TABLE blackout_dates ENABLE ROW LEVEL SECURITY;
-- One row per day and scope. Two partial indexes rather than NULLS NOT DISTINCT, which
-- PostgreSQL 14 lacks; each is also the probe the day check uses.
CREATE UNIQUE INDEX blackout_dates_all_day_key ON blackout_dates (day) WHERE campaign_id IS NULL;
CREATE UNIQUE INDEX blackout_dates_campaign_day_key ON blackout_dates (campaign_id, day)
    WHERE campaign_id IS NOT NULL;

-- Why the local date `p_day` is closed for campaign `p_campaign` under holiday calendar
-- `p_calendar` (NULL: none), or NULL when it is open. A holiday names itself; a
-- campaign's own blackout day wins over one for every campaign.
CREATE FUNCTION dialer_closed_day(p_day date, p_campaign uuid, p_calendar text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = public, pg_temp
AS $$
    SELECT coalesce(
        CASE WHEN p_calendar IS NOT NULL THEN coalesce(
            (SELECT 'holiday: ' || h.name || ' (' || p_calendar || ')'
             FROM holiday_dates h WHERE h.calendar = p_calendar AND h.day = p_day),
            CASE WHEN NOT EXISTS (SELECT 1 FROM holiday_calendars hc
                                  WHERE hc.calendar = p_calendar AND p_day BETWEEN hc.first_day AND hc.last_day)
                 THEN 'holiday calendar ' || p_calendar || ' not loaded for ' || p_day::text END)
        END,
        (SELECT 'blackout: ' || coalesce(b.reason, 'no reason given') FROM blackout_dates b
         WHERE b.campaign_id = p_campaign AND b.day = p_day),
        (SELECT 'blackout: ' || coalesce(b.reason, 'no reason given') FROM blackout_dates b
         WHERE b.campaign_id IS NULL AND b.day = p_day)
    )
$$;

-- The closed local dates around `p_at_utc`: every zone's date at that instant is the
-- UTC date, the day before (down to UTC-12) or the day after (up to UTC+14).
CREATE FUNCTION dialer_closed_dates(p_at_utc timestamp, p_campaign uuid, p_calendar text) RETURNS date[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = public, pg_temp
AS $$
    SELECT coalesce(array_agg(d.day ORDER BY d.day), '{}')
    FROM (SELECT p_at_utc::date + i AS day FROM generate_series(-1, 1) AS i) AS d
    WHERE dialer_closed_day(d.day, p_campaign, p_calendar) IS NOT NULL
$$;

-- Whether a contact may be called at `at_utc` (UTC, like every timestamp column) in
-- `zone`: inside calling hours (dialer_in_calling_hours, 0004) and on a local date
-- that is not closed. The claim spells out the same two terms (see above), asking
-- dialer_closed_day once per possible date instead of once per row; the local date is
-- one of those, so the answers are the same.
CREATE FUNCTION dialer_may_call(
    at_utc timestamp, zone text, hours_start time, hours_end time, days smallint[],
    campaign uuid, calendar text
) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = public, pg_temp
AS $$
    SELECT dialer_in_calling_hours(at_utc, zone, hours_start, hours_end, days)
       AND dialer_closed_day(timezone(zone, timezone('UTC', at_utc))::date, campaign, calendar) IS NULL
$$;

-- The first local date after `p_after` (within a year) that is a calling day and not
-- closed; NULL when there is none (e.g. the calendar is not loaded). A loop, so the
-- usual answer (tomorrow, or after a weekend) costs a day or three of lookups.
CREATE FUNCTION dialer_next_open_day(p_after date, p_campaign uuid, p_calendar text, p_days smallint[])
RETURNS date
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = public, pg_temp
AS $$
DECLARE
    d date;
BEGIN
    FOR i IN 1..366 LOOP
        d := p_after + i;
        IF (p_days IS NULL OR extract(isodow FROM d)::smallint = ANY (p_days))
           AND dialer_closed_day(d, p_campaign, p_calendar) IS NULL THEN
            RETURN d;
        END IF;
    END LOOP;
    RETURN NULL;
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
