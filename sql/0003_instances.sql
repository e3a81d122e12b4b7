-- 0003: running daemons register here (docs/architecture.md: several instances may share one
-- database). A claimed call names the instance holding it in calls.claimed_by; an
-- instance whose heartbeat is stale is dead, and its calls are rescued.
CREATE TABLE dialer_instances (
    id           uuid PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamp NOT NULL DEFAULT timezone('utc', now()),
    heartbeat_at timestamp NOT NULL DEFAULT timezone('utc', now()),
    stopped_at   timestamp
);

ALTER TABLE dialer_instances ENABLE ROW LEVEL SECURITY;
