-- 0015: campaign_results carries the callee's keypad answer (docs/campaigns.md#results):
-- the contact's latest response and when it came (campaign_contacts.response,
-- responded_at), and the keys pressed on the latest attempt (calls.digits). Columns are
-- only appended, so the view is replaced in place and `campaign export` (which follows
-- the view's columns) writes them after `fields`.
CREATE OR REPLACE VIEW campaign_results WITH (security_invoker = true) AS
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
       cc.fields,
       cc.response,
       cc.responded_at,
       k.digits
FROM campaign_contacts cc
JOIN contacts ct ON ct.id = cc.contact_id
LEFT JOIN LATERAL (
    SELECT l.outcome, l.answered_by, l.duration, l.error_code, l.error_message, l.recording_url, l.digits
    FROM calls l
    WHERE l.campaign_id = cc.campaign_id AND l.contact_id = cc.contact_id
    ORDER BY l.retry_count DESC
    LIMIT 1
) k ON true;
