"""The operator console's reads (docs/console.md): the campaigns board, one campaign's
page, its contacts and attempts, and the running instances.

Each snapshot is one statement (the board, the instances) or one read-only
REPEATABLE READ transaction (a campaign page), so what a page shows is one
consistent moment. The console writes nothing through this module: its actions go
through the same code the CLI uses (`dialer.operator.steer`, the importer).

Times are naive UTC, as the schema stores them; "now" is the database's clock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg

from dialer.database import translate_errors
from dialer.status import DialingSnapshot
from dialer.store.campaigns import (
    DUE_WORK_COLUMNS,
    CampaignProgress,
    CampaignStore,
    day_columns,
    dialing_snapshot,
)

BOARD_LIMIT = 200  # campaigns on the board, open ones first
FAILURES_LIMIT = 20
TIMELINE_BUCKETS = 120  # at most this many bars: the bucket widens with the campaign's life
# Bucket widths in seconds, the narrowest that fits TIMELINE_BUCKETS is used (a
# 15-second demo gets 5-second bars; a week-long campaign two-hour ones).
BUCKET_SECONDS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400]
OPEN_DISPOSITIONS = ("pending", "scheduled", "in_progress")


@dataclass(frozen=True)
class BoardRow:
    """One campaign on the board."""

    id: uuid.UUID
    name: str
    status: str
    last_error: str | None
    created_at: datetime
    contacts: int
    open_contacts: int
    total_calls: int
    successful_calls: int
    failed_calls: int
    live_calls: int
    dialed_last_minute: int
    dialing: DialingSnapshot
    responses: dict[str, int]  # contacts by their latest keypad answer (docs/campaigns.md#menus)

    @property
    def final_contacts(self) -> int:
        """Contacts with a final disposition."""
        return self.contacts - self.open_contacts


@dataclass(frozen=True)
class Board:
    """The campaigns board at one moment."""

    now: datetime
    live_instances: int
    rows: list[BoardRow]


@dataclass(frozen=True)
class Failure:
    """A failed attempt, as the campaign page lists it."""

    call_id: uuid.UUID
    contact_id: uuid.UUID
    name: str
    phone_number: str
    retry_count: int
    outcome: str | None
    error_code: int | None
    error_message: str | None
    ended_at: datetime | None


@dataclass(frozen=True)
class Timeline:
    """Dials and answers per bucket over the campaign's life (by dial time)."""

    bucket_seconds: int
    buckets: list[tuple[datetime, int, int]]  # (bucket start, dials, answered)


@dataclass(frozen=True)
class CampaignPage:
    """Everything the live part of a campaign page shows."""

    progress: CampaignProgress
    campaign: dict[str, Any]  # the campaigns row
    live_calls: int
    outcomes: dict[str, int]  # final attempts by carrier outcome
    timeline: Timeline
    failures: list[Failure]
    dialing: DialingSnapshot


@dataclass(frozen=True)
class ContactFilter:
    """The contacts/attempts table filter. Arrives in a POST body, never a URL."""

    search: str = ""  # part of a name, or the start of a number
    disposition: str = ""  # campaign_contacts.call_status
    outcome: str = ""  # calls.outcome
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True)
class Instance:
    """One `dialer run` registered in dialer_instances."""

    id: uuid.UUID
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_age_seconds: float
    stopped_at: datetime | None
    live_calls: int
    fresh: bool
    calls_per_second: float | None  # its configured dialer.calls_per_second
    rate_share: float | None  # dials/s it may count on (the shared rate over live instances)
    dial_rate: float | None  # dials/s it made over its last heartbeat period


def _like(text: str) -> str:
    """A LIKE pattern matching `text` literally (its % _ and \\ escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _dialing(row: Mapping[str, Any], now: datetime, live_instances: int) -> DialingSnapshot:
    # One builder for the CLI's and the console's snapshots (dialer.status explains them).
    return dialing_snapshot({**row, "now": now}, live_instances)


class ConsoleStore:
    """The console's queries, on a pool of its own (so a busy page never takes a
    connection the dialing engine is waiting for)."""

    def __init__(self, pool: asyncpg.Pool, *, default_timezone: str, instance_timeout_seconds: float) -> None:
        self._pool = pool
        self.default_timezone = default_timezone
        self.instance_timeout_seconds = instance_timeout_seconds

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for the writes the console hands to shared code (the importer)."""
        async with self._pool.acquire() as conn:
            # The proxy forwards every Connection method; the importer is typed for a Connection.
            yield cast(asyncpg.Connection, conn)

    def campaigns(self) -> CampaignStore:
        """The CLI's campaign store on the console's pool (steering goes through it)."""
        return CampaignStore(self._pool)

    # The live-call counts read calls_live_idx (live calls only, a few hundred at
    # most); the contact counts read the campaign_contacts indexes. Dialed-last-minute
    # walks the campaign's calls, so it is read for open campaigns only.
    BOARD = f"""
        WITH m AS (
            SELECT timezone('utc', now()) AS now,
                   (SELECT count(*) FROM dialer_instances i
                    WHERE i.stopped_at IS NULL
                      AND i.heartbeat_at > timezone('utc', now()) - make_interval(secs => $2)
                   ) AS live_instances
        ), live AS (
            SELECT campaign_id, count(*) AS n FROM calls
            WHERE status IN ('pending', 'in_progress') GROUP BY campaign_id
        )
        SELECT m.now, m.live_instances, c.*
        FROM m LEFT JOIN LATERAL (
            SELECT c.id, c.name, c.status::text AS status, c.last_error, c.created_at,
                   c.total_calls, c.successful_calls, c.failed_calls,
                   c.schedule_start, c.schedule_end, c.calling_hours_start, c.calling_hours_end,
                   c.calling_days, coalesce(c.timezone, $1) AS zone,
                   dialer_in_calling_hours(m.now, coalesce(c.timezone, $1), c.calling_hours_start,
                                           c.calling_hours_end, c.calling_days) AS in_calling_hours,
                   {day_columns("m.now", "$1")},
                   (SELECT count(*) FROM campaign_contacts cc WHERE cc.campaign_id = c.id) AS contacts,
                   (SELECT count(*) FROM campaign_contacts cc
                    WHERE cc.campaign_id = c.id
                      AND cc.call_status IN ('pending', 'scheduled', 'in_progress')) AS open_contacts,
                   coalesce((SELECT n FROM live WHERE live.campaign_id = c.id), 0) AS live_calls,
                   CASE WHEN c.status IN ('active', 'paused') THEN
                       (SELECT count(*) FROM calls k
                        WHERE k.campaign_id = c.id AND k.dialed_at > m.now - interval '1 minute')
                   ELSE 0 END AS dialed_last_minute,
                   (SELECT min(k.scheduled_at) FROM calls k
                    WHERE k.campaign_id = c.id AND k.status = 'scheduled') AS next_due_at,
                   (SELECT coalesce(jsonb_object_agg(r.response, r.n), '{{}}'::jsonb)
                    FROM (SELECT cc.response, count(*) AS n FROM campaign_contacts cc
                          WHERE cc.campaign_id = c.id AND cc.response IS NOT NULL
                          GROUP BY cc.response) r) AS responses
            FROM campaigns c
            ORDER BY c.status IN ('completed', 'cancelled'), c.created_at DESC, c.id
            LIMIT $3
        ) c ON true
    """

    @translate_errors
    async def board(self, limit: int = BOARD_LIMIT) -> Board:
        """Every campaign (open ones first, newest first) with its live figures."""
        rows = await self._pool.fetch(self.BOARD, self.default_timezone, self.instance_timeout_seconds, limit)
        now, live_instances = rows[0]["now"], rows[0]["live_instances"]
        board_rows = [
            BoardRow(
                id=r["id"],
                name=r["name"],
                status=r["status"],
                last_error=r["last_error"],
                created_at=r["created_at"],
                contacts=r["contacts"],
                open_contacts=r["open_contacts"],
                total_calls=r["total_calls"],
                successful_calls=r["successful_calls"],
                failed_calls=r["failed_calls"],
                live_calls=r["live_calls"],
                dialed_last_minute=r["dialed_last_minute"],
                dialing=_dialing(dict(r), now, live_instances),
                responses={str(k): int(v) for k, v in r["responses"].items()},
            )
            for r in rows
            if r["id"] is not None
        ]
        return Board(now=now, live_instances=live_instances, rows=board_rows)

    # The page reads the due work exactly (DUE_WORK_COLUMNS), as `campaign status`
    # does; the board, refreshed for every campaign at once, judges by the campaign's zone.
    CAMPAIGN = f"""
        SELECT timezone('utc', now()) AS now, c.*,
               {DUE_WORK_COLUMNS.format(now="timezone('utc', now())", zone="$2")},
               coalesce(c.timezone, $2) AS zone,
               {day_columns("timezone('utc', now())", "$2")},
               dialer_in_calling_hours(timezone('utc', now()), coalesce(c.timezone, $2),
                                       c.calling_hours_start, c.calling_hours_end,
                                       c.calling_days) AS in_calling_hours,
               (SELECT count(*) FROM dialer_instances i
                WHERE i.stopped_at IS NULL
                  AND i.heartbeat_at > timezone('utc', now()) - make_interval(secs => $3)) AS live_instances,
               (SELECT coalesce(jsonb_object_agg(d.call_status, d.n), '{{}}'::jsonb)
                FROM (SELECT call_status, count(*) AS n FROM campaign_contacts
                      WHERE campaign_id = c.id GROUP BY call_status) d) AS dispositions,
               (SELECT count(*) FROM calls k
                WHERE k.campaign_id = c.id AND k.status IN ('pending', 'in_progress')) AS live_calls,
               (SELECT count(*) FROM calls k
                WHERE k.campaign_id = c.id
                  AND k.dialed_at > timezone('utc', now()) - interval '1 minute') AS dialed_last_minute,
               (SELECT min(k.scheduled_at) FROM calls k
                WHERE k.campaign_id = c.id AND k.status = 'scheduled') AS next_due_at,
               (SELECT coalesce(jsonb_object_agg(r.response, r.n), '{{}}'::jsonb)
                FROM (SELECT response, count(*) AS n FROM campaign_contacts
                      WHERE campaign_id = c.id AND response IS NOT NULL GROUP BY response) r) AS responses
        FROM campaigns c WHERE c.id = $1
    """

    OUTCOMES = """
        SELECT coalesce(outcome, status::text) AS outcome, count(*) AS n
        FROM calls WHERE campaign_id = $1 AND status IN ('completed', 'failed')
        GROUP BY 1 ORDER BY 2 DESC, 1
    """

    TIMELINE = """
        WITH span AS (
            SELECT date_trunc('minute', min(dialed_at)) AS origin,
                   extract(epoch FROM max(dialed_at) - date_trunc('minute', min(dialed_at))) AS seconds
            FROM calls WHERE campaign_id = $1 AND dialed_at IS NOT NULL
        ), width AS MATERIALIZED (  -- once, not once per call row
            SELECT span.origin,
                   coalesce((SELECT w FROM unnest($2::int[]) w
                             WHERE span.seconds / w < $3 ORDER BY w LIMIT 1), 86400) AS seconds
            FROM span
        )
        SELECT width.seconds,
               date_bin(make_interval(secs => width.seconds), k.dialed_at, width.origin) AS bucket,
               count(*) AS dials,
               count(*) FILTER (WHERE k.status = 'completed') AS answered
        FROM width JOIN calls k ON k.campaign_id = $1 AND k.dialed_at IS NOT NULL
        GROUP BY width.seconds, bucket ORDER BY bucket
    """

    FAILURES = """
        SELECT k.id, k.contact_id, concat_ws(' ', ct.first_name, ct.last_name) AS name, ct.phone_number,
               k.retry_count, k.outcome, k.error_code, k.error_message, k.ended_at
        FROM calls k JOIN contacts ct ON ct.id = k.contact_id
        WHERE k.campaign_id = $1 AND k.status = 'failed'
        ORDER BY k.ended_at DESC NULLS LAST, k.id
        LIMIT $2
    """

    @translate_errors
    async def campaign_page(self, campaign_id: uuid.UUID) -> CampaignPage | None:
        """One campaign's counters, charts and recent failures, in one snapshot."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(
                self.CAMPAIGN, campaign_id, self.default_timezone, self.instance_timeout_seconds
            )
            if row is None:
                return None
            outcomes = await conn.fetch(self.OUTCOMES, campaign_id)
            timeline = await conn.fetch(self.TIMELINE, campaign_id, BUCKET_SECONDS, TIMELINE_BUCKETS)
            failures = await conn.fetch(self.FAILURES, campaign_id, FAILURES_LIMIT)
        dispositions = {str(k): int(v) for k, v in row["dispositions"].items()}
        contacts = sum(dispositions.values())
        open_contacts = sum(n for k, n in dispositions.items() if k in OPEN_DISPOSITIONS)
        now = row["now"]
        progress = CampaignProgress(
            id=row["id"],
            name=row["name"],
            status=row["status"],
            last_error=row["last_error"],
            total_calls=row["total_calls"],
            pending_calls=row["pending_calls"],
            successful_calls=row["successful_calls"],
            failed_calls=row["failed_calls"],
            contacts=contacts,
            dispositions=dispositions,
            responses={str(k): int(v) for k, v in row["responses"].items()},
            dialed_last_minute=row["dialed_last_minute"],
            next_due_at=row["next_due_at"],
            now=now,
        )
        facts = {**dict(row), "contacts": contacts, "open_contacts": open_contacts}
        return CampaignPage(
            progress=progress,
            campaign=dict(row),
            live_calls=row["live_calls"],
            outcomes={r["outcome"]: r["n"] for r in outcomes},
            timeline=Timeline(
                bucket_seconds=timeline[0]["seconds"] if timeline else 60,
                buckets=[(r["bucket"], r["dials"], r["answered"]) for r in timeline],
            ),
            failures=[
                Failure(
                    call_id=r["id"],
                    contact_id=r["contact_id"],
                    name=r["name"],
                    phone_number=r["phone_number"],
                    retry_count=r["retry_count"],
                    outcome=r["outcome"],
                    error_code=r["error_code"],
                    error_message=r["error_message"],
                    ended_at=r["ended_at"],
                )
                for r in failures
            ],
            dialing=_dialing(facts, now, row["live_instances"]),
        )

    CONTACTS = """
        SELECT cc.contact_id, ct.first_name, ct.last_name, ct.phone_number, cc.call_status,
               cc.call_count, cc.last_call_at, last.outcome, last.recording_url
        FROM campaign_contacts cc
        JOIN contacts ct ON ct.id = cc.contact_id
        LEFT JOIN LATERAL (
            SELECT k.outcome, k.recording_url FROM calls k
            WHERE k.campaign_id = cc.campaign_id AND k.contact_id = cc.contact_id
            ORDER BY k.retry_count DESC LIMIT 1
        ) last ON true
        WHERE cc.campaign_id = $1
          AND ($2 = '' OR cc.call_status = $2)
          AND ($3 = '' OR ct.phone_number LIKE $3 || '%'
               OR concat_ws(' ', ct.first_name, ct.last_name) ILIKE '%' || $3 || '%')
        ORDER BY cc.last_call_at DESC NULLS LAST, ct.last_name, ct.first_name, cc.contact_id
        LIMIT $4 OFFSET $5
    """

    @translate_errors
    async def contacts(self, campaign_id: uuid.UUID, f: ContactFilter) -> list[dict[str, Any]]:
        """The campaign's contacts matching the filter, with their last attempt."""
        rows = await self._pool.fetch(
            self.CONTACTS, campaign_id, f.disposition, _like(f.search.strip()), f.limit, f.offset
        )
        return [dict(r) for r in rows]

    ATTEMPTS = """
        SELECT k.id, k.contact_id, ct.first_name, ct.last_name, ct.phone_number, k.retry_count,
               k.status::text AS status, k.outcome, k.error_code, k.error_message, k.answered_by,
               k.duration, k.dialed_at, k.ended_at, k.recording_url
        FROM calls k
        JOIN contacts ct ON ct.id = k.contact_id
        JOIN campaign_contacts cc ON cc.campaign_id = k.campaign_id AND cc.contact_id = k.contact_id
        WHERE k.campaign_id = $1
          AND ($2 = '' OR cc.call_status = $2)
          AND ($3 = '' OR k.outcome = $3)
          AND ($4 = '' OR ct.phone_number LIKE $4 || '%'
               OR concat_ws(' ', ct.first_name, ct.last_name) ILIKE '%' || $4 || '%')
        ORDER BY coalesce(k.dialed_at, k.scheduled_at) DESC, k.id
        LIMIT $5 OFFSET $6
    """

    @translate_errors
    async def attempts(self, campaign_id: uuid.UUID, f: ContactFilter) -> list[dict[str, Any]]:
        """The campaign's call attempts matching the filter, newest first."""
        rows = await self._pool.fetch(
            self.ATTEMPTS,
            campaign_id,
            f.disposition,
            f.outcome,
            _like(f.search.strip()),
            f.limit,
            f.offset,
        )
        return [dict(r) for r in rows]

    # Stopped instances stay listed for an hour, so an operator sees one that just exited.
    INSTANCES = """
        SELECT i.id, i.hostname, i.pid, i.started_at, i.stopped_at,
               i.calls_per_second, i.rate_share, i.dial_rate,
               extract(epoch FROM timezone('utc', now()) - i.heartbeat_at)::float8 AS heartbeat_age,
               (SELECT count(*) FROM calls k
                WHERE k.claimed_by = i.id AND k.status IN ('pending', 'in_progress')) AS live_calls
        FROM dialer_instances i
        WHERE i.stopped_at IS NULL OR i.stopped_at > timezone('utc', now()) - interval '1 hour'
        ORDER BY i.stopped_at IS NOT NULL, i.started_at, i.id
    """

    @translate_errors
    async def instances(self) -> list[Instance]:
        """Running (and recently stopped) daemons, with heartbeat age and live calls."""
        rows = await self._pool.fetch(self.INSTANCES)
        return [
            Instance(
                id=r["id"],
                hostname=r["hostname"],
                pid=r["pid"],
                started_at=r["started_at"],
                heartbeat_age_seconds=max(0.0, r["heartbeat_age"]),
                stopped_at=r["stopped_at"],
                live_calls=r["live_calls"],
                fresh=r["stopped_at"] is None and r["heartbeat_age"] < self.instance_timeout_seconds,
                calls_per_second=r["calls_per_second"],
                rate_share=r["rate_share"],
                dial_rate=r["dial_rate"],
            )
            for r in rows
        ]

    @translate_errors
    async def campaign_exists(self, campaign_id: uuid.UUID) -> bool:
        """Whether the campaign exists (a page for an unknown id is a 404)."""
        return bool(await self._pool.fetchval("SELECT true FROM campaigns WHERE id = $1", campaign_id))
