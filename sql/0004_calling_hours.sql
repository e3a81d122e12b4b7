-- 0004: calling hours (docs/campaigns.md) as one SQL function, used both when a due call is
-- claimed and again right before its carrier request, so the two can never disagree.
--
-- at_utc: the moment (UTC, like every timestamp column); zone: the contact's IANA
-- zone; [hours_start, hours_end): local time window, crossing midnight when end <
-- start, any time when either is NULL; days: ISO weekdays (1 = Monday) of the local
-- date, any day when NULL.
CREATE FUNCTION dialer_in_calling_hours(
    at_utc timestamp, zone text, hours_start time, hours_end time, days smallint[]
) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (days IS NULL OR extract(isodow FROM local)::smallint = ANY (days))
       AND (hours_start IS NULL OR hours_end IS NULL
            OR CASE WHEN hours_start < hours_end
                    THEN local::time >= hours_start AND local::time < hours_end
                    WHEN hours_start > hours_end
                    THEN local::time >= hours_start OR local::time < hours_end
                    ELSE false
               END)
    FROM (SELECT timezone(zone, timezone('UTC', at_utc)) AS local) AS l
$$;
