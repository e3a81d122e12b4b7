-- 0010: campaign status changes follow the lifecycle whoever writes them, and are
-- recorded (docs/invariants.md#7, docs/campaigns.md#lifecycle); data that belongs to
-- a contact in one campaign (docs/campaigns.md#scripts).
--
-- Allowed changes of campaigns.status:
--   draft     → active | cancelled
--   active    → paused | cancelled | completed
--   paused    → active | cancelled | completed
--   completed, cancelled: final.
-- Setting the status a campaign already has changes nothing and is no error. Any
-- other change fails the whole statement (SQLSTATE 23514, constraint
-- campaigns_status_transition) with a message naming both statuses: a campaign
-- cancelled in the dashboard can no longer be set active by a stray UPDATE and then
-- completed by the daemon, erasing the cancellation. The daemon's own writes
-- (completion, expiry) are changes of this table like any other.
--
-- campaign_status_history: one row per change of status, and one for the creation
-- (from_status NULL), written by a trigger as the table's owner, so every writer is
-- recorded and no writer needs (or gets) the right to write history itself.
-- changed_by is the writer's role and its application_name, "role (application)":
-- the daemon names its sessions `dialer run`, the CLI `dialer cli`, the console
-- `dialer console`. application_name is whatever the client says it is; the role is
-- what the server authenticated.

-- The rule is written once, here; a trigger function's EXECUTE right is checked when
-- the trigger is created, so it fires for every writer, while a helper function called
-- from it would need EXECUTE for each of them: hence no helper.
CREATE FUNCTION dialer_campaign_status_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    allowed text[] := CASE OLD.status
        WHEN 'draft' THEN ARRAY['active', 'cancelled']
        WHEN 'active' THEN ARRAY['paused', 'cancelled', 'completed']
        WHEN 'paused' THEN ARRAY['active', 'cancelled', 'completed']
        ELSE ARRAY[]::text[]
    END;
BEGIN
    IF NOT NEW.status::text = ANY (allowed) THEN
        RAISE EXCEPTION 'campaign %: status cannot change from % to % (%)', OLD.id, OLD.status, NEW.status,
            CASE WHEN cardinality(allowed) = 0 THEN OLD.status::text || ' is final'
                 ELSE 'from ' || OLD.status::text || ' only to ' || array_to_string(allowed, ' or ') END
            USING ERRCODE = 'check_violation', CONSTRAINT = 'campaigns_status_transition',
                  TABLE = 'campaigns', COLUMN = 'status';
    END IF;
    RETURN NEW;
END;
$$;

-- Before any other BEFORE trigger that might look at the row (alphabetical order:
-- campaigns_a… fires first); only when the status actually changes.
CREATE TRIGGER campaigns_a_status_guard BEFORE UPDATE ON campaigns
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION dialer_campaign_status_guard();

CREATE TABLE campaign_status_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id uuid NOT NULL,
    from_status campaign_status,
    to_status   campaign_status NOT NULL,
    changed_at  timestamp NOT NULL DEFAULT timezone('utc', now()),
    changed_by  text NOT NULL,
    CONSTRAINT campaign_status_history_campaign_id_fk
        FOREIGN KEY (campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE
);

CREATE INDEX campaign_status_history_campaign_idx ON campaign_status_history (campaign_id, id);

ALTER TABLE campaign_status_history ENABLE ROW LEVEL SECURITY;

-- SECURITY DEFINER: the history is written as the table's owner, whoever changed the
-- status (a role without any right on the history table included); the function can
-- only run as this trigger (EXECUTE is revoked below, and a trigger function cannot be
-- called directly). Inside it current_user is the owner, so the writer is read from
-- the role setting (SET ROLE) or else the session's authenticated user.
CREATE FUNCTION dialer_campaign_status_record() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    writer text := coalesce(nullif(current_setting('role', true), 'none'), session_user::text);
    app    text := nullif(current_setting('application_name', true), '');
BEGIN
    INSERT INTO campaign_status_history (campaign_id, from_status, to_status, changed_by)
    VALUES (NEW.id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
            NEW.status,
            writer || coalesce(' (' || app || ')', ''));
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaigns_status_record_insert AFTER INSERT ON campaigns
    FOR EACH ROW EXECUTE FUNCTION dialer_campaign_status_record();
CREATE TRIGGER campaigns_status_record_update AFTER UPDATE ON campaigns
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION dialer_campaign_status_record();

-- Campaigns that existed before this migration: their creation as they are now, so
-- every campaign's history starts with a row.
INSERT INTO campaign_status_history (campaign_id, from_status, to_status, changed_at, changed_by)
SELECT id, NULL, status, created_at, 'migration 0010 (status when recorded)' FROM campaigns;

-- What a contact brings to one campaign (an appointment's date): {{custom.KEY}} reads
-- these before contacts.custom_fields (docs/campaigns.md#scripts).
ALTER TABLE campaign_contacts
    ADD COLUMN fields jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD CONSTRAINT campaign_contacts_fields_check CHECK (jsonb_typeof(fields) = 'object');

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
