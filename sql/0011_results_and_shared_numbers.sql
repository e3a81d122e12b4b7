-- 0011: one live call per phone number, and a campaign's results as one view.
--
-- Shared numbers (docs/invariants.md#1): several contacts may share one number (the
-- family members of a clinic's patients), each called about their own appointment,
-- but the number is never rung twice at once, across all campaigns. The claim skips
-- a number with a live call (dialer/store/claims.py); as a backstop, the number a
-- call dials is written on the call when it is claimed (calls.dialed_number, which
-- also keeps the number an attempt really rang if the contact's changes later) and a
-- partial unique index allows one live call per number, as calls_one_live_call_idx
-- does per contact.
ALTER TABLE calls ADD COLUMN dialed_number varchar(20);

-- Live calls of a daemon running while this migrates: the first per number gets its
-- number (two already live on one number, possible before this, must not stop the
-- migration; they end on their own).
UPDATE calls k SET dialed_number = live.phone_number
FROM (
    SELECT DISTINCT ON (ct.phone_number) l.id, ct.phone_number
    FROM calls l JOIN contacts ct ON ct.id = l.contact_id
    WHERE l.status IN ('pending', 'in_progress')
    ORDER BY ct.phone_number, l.claimed_at, l.id
) live
WHERE k.id = live.id;

CREATE UNIQUE INDEX calls_one_live_call_per_number_idx ON calls (dialed_number)
    WHERE status IN ('pending', 'in_progress');

-- campaign_results: one row per campaign contact with its disposition and the latest
-- attempt (its calls row with the highest retry_count: the last one dialed, or the
-- retry scheduled or cancelled after it). `dialer campaign export` writes it as CSV
-- (docs/campaigns.md#results). security_invoker: read with the reader's rights, so
-- row-level security applies through it (docs/supabase.md).
CREATE VIEW campaign_results WITH (security_invoker = true) AS
SELECT cc.campaign_id,
       cc.contact_id,
       ct.first_name,
       ct.last_name,
       ct.phone_number,
       cc.call_status,
       cc.call_count,
       cc.last_call_at,
       k.outcome,
       k.answered_by,
       k.duration,
       k.error_code,
       k.error_message,
       k.recording_url,
       cc.fields
FROM campaign_contacts cc
JOIN contacts ct ON ct.id = cc.contact_id
LEFT JOIN LATERAL (
    SELECT l.outcome, l.answered_by, l.duration, l.error_code, l.error_message, l.recording_url
    FROM calls l
    WHERE l.campaign_id = cc.campaign_id AND l.contact_id = cc.contact_id
    ORDER BY l.retry_count DESC
    LIMIT 1
) k ON true;
