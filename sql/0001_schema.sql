-- 0001: the original data model, to the letter, plus the columns the daemon adds
-- (docs/schema.md).
--
-- Timestamps are `timestamp` (without time zone) as the data model says, and always hold
-- UTC: every default is timezone('utc', now()) so that a session with another
-- TimeZone setting still writes UTC. Calling hours are computed from these in SQL.

CREATE TYPE campaign_status AS ENUM ('draft', 'active', 'paused', 'completed', 'cancelled');

CREATE TYPE call_status AS ENUM (
    'scheduled', 'in_progress', 'completed', 'failed', 'cancelled', 'pending'
);

CREATE TABLE campaigns (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 varchar(255) NOT NULL,
    description          text,
    status               campaign_status NOT NULL DEFAULT 'draft',
    schedule_start       timestamp,
    schedule_end         timestamp,
    script_template      text,
    max_retries          integer NOT NULL DEFAULT 2,
    retry_delay_minutes  integer NOT NULL DEFAULT 60,
    calling_hours_start  time,
    calling_hours_end    time,
    pending_calls        integer NOT NULL DEFAULT 0,
    total_calls          integer NOT NULL DEFAULT 0,
    successful_calls     integer NOT NULL DEFAULT 0,
    failed_calls         integer NOT NULL DEFAULT 0,
    created_at           timestamp NOT NULL DEFAULT timezone('utc', now()),
    updated_at           timestamp NOT NULL DEFAULT timezone('utc', now()),
    -- additions (docs/schema.md)
    caller_id            text,
    timezone             text,
    max_concurrent_calls integer,
    calling_days         smallint[],
    last_error           text,
    -- carrier options per campaign (docs/carrier.md)
    machine_detection    boolean NOT NULL DEFAULT false,
    machine_is_failure   boolean NOT NULL DEFAULT false,
    record_calls         boolean NOT NULL DEFAULT false,
    ring_timeout_seconds integer NOT NULL DEFAULT 30,
    time_limit_seconds   integer NOT NULL DEFAULT 600,
    CONSTRAINT campaigns_dates_check CHECK (schedule_end >= schedule_start),
    CONSTRAINT campaigns_max_retries_check CHECK (max_retries >= 0),
    CONSTRAINT campaigns_retry_delay_check CHECK (retry_delay_minutes >= 0),
    CONSTRAINT campaigns_max_concurrent_calls_check
        CHECK (max_concurrent_calls IS NULL OR max_concurrent_calls > 0),
    CONSTRAINT campaigns_calling_days_check
        CHECK (calling_days IS NULL OR calling_days <@ ARRAY[1, 2, 3, 4, 5, 6, 7]::smallint[]),
    CONSTRAINT campaigns_ring_timeout_check CHECK (ring_timeout_seconds BETWEEN 5 AND 600),
    CONSTRAINT campaigns_time_limit_check CHECK (time_limit_seconds BETWEEN 1 AND 14400),
    CONSTRAINT campaigns_counters_check CHECK (
        pending_calls >= 0 AND total_calls >= 0 AND successful_calls >= 0 AND failed_calls >= 0
    )
);

CREATE TABLE contacts (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    first_name        varchar(100),
    last_name         varchar(100),
    phone_number      varchar(20) NOT NULL,
    email             varchar(255),
    custom_fields     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamp NOT NULL DEFAULT timezone('utc', now()),
    updated_at        timestamp NOT NULL DEFAULT timezone('utc', now()),
    -- addition (docs/schema.md)
    timezone          text,
    -- Filled by the daemon (dialer.numbers) and reset by a trigger whenever
    -- phone_number or timezone change: NULL checked_at means "not looked at yet".
    checked_at        timestamp,
    number_valid      boolean,
    resolved_timezone text,
    CONSTRAINT contacts_custom_fields_check CHECK (jsonb_typeof(custom_fields) = 'object')
);

CREATE TABLE campaign_contacts (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    campaign_id  uuid NOT NULL,
    contact_id   uuid NOT NULL,
    call_status  varchar(50) NOT NULL DEFAULT 'pending',
    call_count   integer NOT NULL DEFAULT 0,
    last_call_at timestamp,
    created_at   timestamp NOT NULL DEFAULT timezone('utc', now()),
    updated_at   timestamp NOT NULL DEFAULT timezone('utc', now()),
    CONSTRAINT campaign_contacts_campaign_id_fk
        FOREIGN KEY (campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE,
    CONSTRAINT campaign_contacts_contact_id_fk
        FOREIGN KEY (contact_id) REFERENCES contacts (id) ON DELETE CASCADE,
    CONSTRAINT campaign_contacts_campaign_contact_key UNIQUE (campaign_id, contact_id),
    CONSTRAINT campaign_contacts_call_status_check CHECK (call_status IN (
        'pending', 'scheduled', 'in_progress',
        'completed', 'failed', 'cancelled', 'invalid_number', 'do_not_call'
    )),
    CONSTRAINT campaign_contacts_call_count_check CHECK (call_count >= 0)
);

CREATE TABLE calls (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    campaign_id      uuid NOT NULL,
    contact_id       uuid NOT NULL,
    status           call_status NOT NULL DEFAULT 'scheduled',
    call_sid         varchar(255),
    duration         integer,
    recording_url    varchar(255),
    retry_count      integer NOT NULL DEFAULT 0,
    scheduled_at     timestamp NOT NULL DEFAULT timezone('utc', now()),
    started_at       timestamp,
    ended_at         timestamp,
    created_at       timestamp NOT NULL DEFAULT timezone('utc', now()),
    updated_at       timestamp NOT NULL DEFAULT timezone('utc', now()),
    -- additions (docs/schema.md)
    outcome          text,
    error_code       integer,
    error_message    text,
    answered_by      text,
    -- Daemon bookkeeping: which instance claimed the call and when, when the carrier
    -- request was started (NULL = never sent, so the call can be re-queued without
    -- asking the carrier), the last word heard about it, transient-error retries.
    claimed_by       uuid,
    claimed_at       timestamp,
    dialed_at        timestamp,
    last_event_at    timestamp,
    carrier_attempts integer NOT NULL DEFAULT 0,
    CONSTRAINT calls_campaign_id_fk
        FOREIGN KEY (campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE,
    CONSTRAINT calls_contact_id_fk
        FOREIGN KEY (contact_id) REFERENCES contacts (id) ON DELETE CASCADE,
    CONSTRAINT calls_call_sid_key UNIQUE (call_sid),
    -- One row per attempt: a duplicated callback can never create a second retry.
    CONSTRAINT calls_attempt_key UNIQUE (campaign_id, contact_id, retry_count),
    CONSTRAINT calls_retry_count_check CHECK (retry_count >= 0),
    CONSTRAINT calls_duration_check CHECK (duration IS NULL OR duration >= 0),
    CONSTRAINT calls_in_progress_has_sid_check CHECK (status <> 'in_progress' OR call_sid IS NOT NULL)
);

CREATE TABLE do_not_call (
    phone_number varchar(20) PRIMARY KEY,
    reason       text,
    created_at   timestamp NOT NULL DEFAULT timezone('utc', now())
);

-- The data model's indexes, by their original names.
CREATE INDEX campaigns_name_idx ON campaigns (name);
CREATE INDEX calls_campaign_id_idx ON calls (campaign_id);
CREATE INDEX calls_contact_id_idx ON calls (contact_id);
CREATE INDEX contacts_phone_number_idx ON contacts (phone_number);
CREATE INDEX campaign_contacts_campaign_id_idx ON campaign_contacts (campaign_id);
CREATE INDEX campaign_contacts_contact_id_idx ON campaign_contacts (contact_id);

-- The daemon's own indexes.
-- Invariant 1: at most one open attempt per contact and campaign, and at most one
-- live call per contact across all campaigns.
CREATE UNIQUE INDEX calls_one_open_attempt_idx ON calls (campaign_id, contact_id)
    WHERE status IN ('scheduled', 'pending', 'in_progress');
CREATE UNIQUE INDEX calls_one_live_call_idx ON calls (contact_id)
    WHERE status IN ('pending', 'in_progress');
-- The due-call claim walks this in scheduled_at order.
CREATE INDEX calls_due_idx ON calls (campaign_id, scheduled_at) WHERE status = 'scheduled';
CREATE INDEX calls_live_idx ON calls (claimed_by) WHERE status IN ('pending', 'in_progress');
CREATE INDEX campaign_contacts_open_idx ON campaign_contacts (campaign_id)
    WHERE call_status IN ('pending', 'scheduled', 'in_progress');
CREATE INDEX contacts_unchecked_idx ON contacts (id) WHERE checked_at IS NULL;

-- Supabase publishes `public` to anon/authenticated: RLS with no policies shows them
-- nothing. The owner (the daemon's role) is not subject to it.
ALTER TABLE campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE do_not_call ENABLE ROW LEVEL SECURITY;
