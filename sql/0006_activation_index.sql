-- 0006: activation picks `pending` campaign contacts in batches. Through
-- campaign_contacts_open_idx (pending, scheduled and in_progress alike) each batch
-- had to step over every contact the batches before it had already scheduled, so a
-- million-contact activation grew quadratically. An index of the pending ones only
-- shrinks as activation proceeds.
CREATE INDEX campaign_contacts_pending_idx ON campaign_contacts (campaign_id)
    WHERE call_status = 'pending';
