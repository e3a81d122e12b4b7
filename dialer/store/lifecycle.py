"""Every database operation of the dialing engine and the webhook listener, as
named methods: campaign housekeeping, claiming due calls, the dial gate, carrier
events, retries, dispositions and rescue.

Each method is one short transaction. Times are naive UTC `datetime`s from the
injected clock, so tests can move time without sleeping.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from dialer import numbers
from dialer.carrier import FINAL_TWILIO_STATUSES, PERMANENT_ERROR_CODES
from dialer.database import translate_errors
from dialer.errors import TemplateError
from dialer.models import (
    ApplyResult,
    CallEvent,
    CallStatus,
    Campaign,
    CampaignStatus,
    ClaimedCall,
    Contact,
    DialIntent,
)

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
Conn = asyncpg.Connection | PoolConnectionProxy

HOUSEKEEPING_LOCK = 0x6469616C6572_01  # one instance at a time runs housekeeping
ACTIVATION_BATCH = 10_000  # campaign contacts scheduled per statement
ACTIVATION_BUDGET = 1.0  # seconds of activation per housekeeping pass
ACTIVATION_WORKERS = 2  # batches in flight at once
CHECK_BATCH = 2_000  # contacts whose number is checked per pass


def utcnow() -> datetime:
    """The current time as the naive UTC datetime the schema stores."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class LiveCall:
    """A call in `pending` or `in_progress` this instance must follow to its end."""

    id: uuid.UUID
    campaign_id: uuid.UUID
    status: CallStatus
    call_sid: str | None
    dialed_at: datetime | None
    phone_number: str
    from_number: str
    ring_timeout_seconds: int
    time_limit_seconds: int


CAMPAIGN_COLUMNS = """
    id, name, status, script_template, caller_id, timezone, schedule_start, schedule_end,
    calling_hours_start, calling_hours_end, calling_days, max_retries, retry_delay_minutes,
    max_concurrent_calls, machine_detection, machine_is_failure, record_calls,
    ring_timeout_seconds, time_limit_seconds, last_error, total_calls
"""


def _campaign(row: asyncpg.Record) -> Campaign:
    fields = dict(row)
    fields["status"] = CampaignStatus(fields["status"])
    fields["calling_days"] = list(fields["calling_days"]) if fields["calling_days"] is not None else None
    return Campaign(**fields)


class LifecycleStore:
    """The engine's view of the database. One per process; safe for concurrent use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        instance_id: uuid.UUID,
        default_timezone: str = "UTC",
        default_from_number: str = "",
        validate_template: Callable[[str], None],
        clock: Clock = utcnow,
    ) -> None:
        self.pool = pool
        self.validate_template = validate_template
        self.instance_id = instance_id
        self.default_timezone = default_timezone
        self.default_from_number = default_from_number
        self.clock = clock
        self._zones: frozenset[str] | None = None

    # ------------------------------------------------------------------ instances

    @translate_errors
    async def register_instance(self) -> None:
        """Record this process in dialer_instances, and mark dead any earlier process
        on this host whose pid no longer runs (so its calls are rescued at once)."""
        host = socket.gethostname()
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO dialer_instances (id, hostname, pid, started_at, heartbeat_at) "
                "VALUES ($1, $2, $3, $4, $4)",
                self.instance_id,
                host,
                os.getpid(),
                now,
            )
            rows = await conn.fetch(
                "SELECT id, pid FROM dialer_instances "
                "WHERE hostname = $1 AND stopped_at IS NULL AND id <> $2",
                host,
                self.instance_id,
            )
            dead = [r["id"] for r in rows if not _pid_alive(r["pid"])]
            if dead:
                await conn.execute(
                    "UPDATE dialer_instances SET stopped_at = $2 WHERE id = ANY($1::uuid[])", dead, now
                )

    @translate_errors
    async def ping(self) -> None:
        """One trivial round trip: raises DatabaseUnavailable unless the database answers."""
        await self.pool.fetchval("SELECT 1")

    @translate_errors
    async def heartbeat(self) -> None:
        """Tell other instances this one is alive."""
        await self.pool.execute(
            "UPDATE dialer_instances SET heartbeat_at = $2 WHERE id = $1", self.instance_id, self.clock()
        )

    @translate_errors
    async def mark_stopped(self) -> None:
        """A clean exit: other instances need not wait for the heartbeat to expire."""
        await self.pool.execute(
            "UPDATE dialer_instances SET stopped_at = $2 WHERE id = $1", self.instance_id, self.clock()
        )

    # ------------------------------------------------------------- housekeeping

    @translate_errors
    async def housekeep(self) -> bool:
        """One pass of the work that must run on one instance at a time: check new
        contacts' numbers, finish cancelled and expired campaigns, validate active
        ones, complete those with nothing left; then activate (which is safe on any
        number of instances at once, and runs in short batches of its own). Returns
        False when another instance holds the housekeeping lock."""
        await self.check_contacts()
        runnable: list[Campaign] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", HOUSEKEEPING_LOCK):
                return False
            now = self.clock()
            await self._finish_cancelled(conn)
            await self._expire(conn, now)
            for campaign in await self._campaigns(conn, (CampaignStatus.ACTIVE,)):
                problem = await self._validate(conn, campaign, now)
                if problem != campaign.last_error:
                    await conn.execute(
                        "UPDATE campaigns SET last_error = $2 WHERE id = $1", campaign.id, problem
                    )
                    if problem:
                        log.error("campaign_invalid", campaign_id=str(campaign.id), reason=problem)
                    else:
                        log.info("campaign_valid_again", campaign_id=str(campaign.id))
                if not problem and _in_window(campaign, now):
                    runnable.append(campaign)
            await self._complete(conn)
        deadline = time.monotonic() + ACTIVATION_BUDGET
        for campaign in runnable:
            await self._activate(campaign, now, deadline)
        return True

    async def _campaigns(self, conn: Conn, statuses: Sequence[CampaignStatus]) -> list[Campaign]:
        rows = await conn.fetch(
            f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE status = ANY($1::campaign_status[])",
            [s.value for s in statuses],
        )
        return [_campaign(r) for r in rows]

    async def _known_zones(self, conn: Conn) -> frozenset[str]:
        if self._zones is None:
            rows = await conn.fetch("SELECT name FROM pg_timezone_names")
            self._zones = frozenset(r["name"] for r in rows)
        return self._zones

    @translate_errors
    async def check_contacts(self, budget_seconds: float = 0.5) -> int:
        """Validate numbers and resolve zones of contacts nobody has looked at yet
        (added by hand, or changed), in short batches for at most `budget_seconds`."""
        checked = 0
        deadline = time.monotonic() + budget_seconds
        while time.monotonic() < deadline:
            async with self.pool.acquire() as conn, conn.transaction():
                n = await self._check_contact_batch(conn)
            checked += n
            if n < CHECK_BATCH:
                break
        return checked

    async def _check_contact_batch(self, conn: Conn) -> int:
        # Own zone if PostgreSQL knows it, else the one the number implies.
        zones = await self._known_zones(conn)
        rows = await conn.fetch(
            "SELECT id, phone_number, timezone FROM contacts WHERE checked_at IS NULL "
            "LIMIT $1 FOR UPDATE SKIP LOCKED",
            CHECK_BATCH,
        )
        if not rows:
            return 0
        ids, valid, resolved = [], [], []
        for r in rows:
            ok, zone = _check_number(r["phone_number"])
            own = r["timezone"]
            if own and own in zones:
                zone = own
            elif own:
                log.warning("contact_timezone_unknown", contact_id=str(r["id"]), timezone=own)
            ids.append(r["id"])
            valid.append(ok)
            resolved.append(zone if zone in zones else None)
        await conn.execute(
            """
            UPDATE contacts c SET checked_at = $4, number_valid = v.valid, resolved_timezone = v.zone
            FROM unnest($1::uuid[], $2::boolean[], $3::text[]) AS v(id, valid, zone)
            WHERE c.id = v.id
            """,
            ids,
            valid,
            resolved,
            self.clock(),
        )
        return len(rows)

    async def _validate(self, conn: Conn, c: Campaign, now: datetime) -> str | None:
        """Why this campaign cannot be dialed, or None. Checked before every pass so
        a fix by the operator is picked up without a restart."""
        if c.schedule_end is not None and c.schedule_end < now:
            # Only a campaign that never ran gets here (_expire completes the others):
            # most likely a mistyped date, so nothing is cancelled; the operator decides.
            return f"schedule_end {c.schedule_end:%Y-%m-%d %H:%M} UTC is in the past; nothing was dialed"
        try:
            self.validate_template(c.script_template or "")
        except TemplateError as exc:
            return f"script_template: {exc}"
        if not (c.caller_id or self.default_from_number):
            return "no caller id: set campaigns.caller_id or twilio.from_number"
        if c.caller_id:
            try:
                if numbers.parse(c.caller_id).e164 != c.caller_id:
                    return f"caller_id {c.caller_id!r} is not in E.164 form"
            except numbers.InvalidNumber as exc:
                return f"caller_id: {exc}"
        if c.timezone and c.timezone not in await self._known_zones(conn):
            return f"timezone {c.timezone!r} is not a known IANA zone"
        if (
            c.calling_hours_start is not None
            and c.calling_hours_end is not None
            and c.calling_hours_start == c.calling_hours_end
        ):
            return "calling_hours_start equals calling_hours_end: the window is empty"
        return None

    async def _activate(self, c: Campaign, now: datetime, deadline: float) -> int:
        """Give contacts that need one their first scheduled call (or invalid_number),
        one set-based statement and one short transaction per batch, until done or
        the pass's time budget runs out: a million-contact campaign starts dialing
        while the rest is still being scheduled, and nothing waits on a long
        transaction. Batches are independent (SKIP LOCKED, ON CONFLICT), so two run
        side by side: index maintenance is CPU-bound in the server, and a second
        backend uses the second core (300,000 contacts: 18 s → 12 s)."""

        async def worker() -> int:
            created = 0
            while True:
                row = await self.pool.fetchrow(ACTIVATE_BATCH_SQL, c.id, now, ACTIVATION_BATCH)
                assert row is not None  # an aggregate always returns one row
                created += int(row["inserted"])
                if row["marked"] < ACTIVATION_BATCH or time.monotonic() >= deadline:
                    return created

        created = sum(await asyncio.gather(*(worker() for _ in range(ACTIVATION_WORKERS))))
        if created:
            log.info("campaign_activated", campaign_id=str(c.id), calls_created=created)
        return created

    async def _finish_cancelled(self, conn: Conn) -> None:
        """Cancelled (docs/campaigns.md#lifecycle): scheduled calls and unfinished contacts are cancelled;
        live calls finish on their own and are recorded."""
        await conn.execute(
            """
            UPDATE calls k SET status = 'cancelled', outcome = 'campaign-cancelled'
            FROM campaigns c
            WHERE c.status = 'cancelled' AND k.campaign_id = c.id AND k.status = 'scheduled'
            """
        )
        await conn.execute(
            """
            UPDATE campaign_contacts cc SET call_status = 'cancelled'
            FROM campaigns c
            WHERE c.status = 'cancelled' AND cc.campaign_id = c.id
              AND cc.call_status IN ('pending', 'scheduled')
              AND NOT EXISTS (SELECT 1 FROM calls k WHERE k.campaign_id = c.id
                              AND k.contact_id = cc.contact_id AND k.status IN ('pending', 'in_progress'))
            """
        )

    async def _expire(self, conn: Conn, now: datetime) -> None:
        """docs/campaigns.md#lifecycle: when schedule_end passes the campaign is completed and its
        unfinished contacts and their scheduled calls are cancelled. Only a campaign
        that ran (has calls): one started with its end already past cannot run, and
        _validate reports it instead of cancelling every contact."""
        expired = await conn.fetch(
            """
            UPDATE campaigns SET status = 'completed'
            WHERE status IN ('active', 'paused') AND schedule_end IS NOT NULL AND schedule_end < $1
              AND total_calls > 0
            RETURNING id
            """,
            now,
        )
        for row in expired:
            await conn.execute(
                "UPDATE calls SET status = 'cancelled', outcome = 'campaign-ended' "
                "WHERE campaign_id = $1 AND status = 'scheduled'",
                row["id"],
            )
            await conn.execute(
                """
                UPDATE campaign_contacts cc SET call_status = 'cancelled'
                WHERE cc.campaign_id = $1 AND cc.call_status IN ('pending', 'scheduled')
                  AND NOT EXISTS (SELECT 1 FROM calls k WHERE k.campaign_id = $1
                                  AND k.contact_id = cc.contact_id AND k.status IN ('pending', 'in_progress'))
                """,
                row["id"],
            )
            log.info("campaign_expired", campaign_id=str(row["id"]))

    async def _complete(self, conn: Conn) -> None:
        """Active campaigns whose every contact is final become completed. A campaign
        with no contacts at all stays active: contacts may still be added."""
        rows = await conn.fetch(
            """
            UPDATE campaigns c SET status = 'completed'
            WHERE c.status = 'active'
              AND EXISTS (SELECT 1 FROM campaign_contacts cc WHERE cc.campaign_id = c.id)
              AND NOT EXISTS (SELECT 1 FROM campaign_contacts cc WHERE cc.campaign_id = c.id
                              AND cc.call_status IN ('pending', 'scheduled', 'in_progress'))
              AND NOT EXISTS (SELECT 1 FROM calls k WHERE k.campaign_id = c.id
                              AND k.status IN ('scheduled', 'pending', 'in_progress'))
            RETURNING c.id
            """
        )
        for row in rows:
            log.info("campaign_completed", campaign_id=str(row["id"]))

    # ------------------------------------------------------------------ claiming

    @translate_errors
    async def dialable_campaigns(self) -> list[Campaign]:
        """Active, valid campaigns inside their schedule window."""
        now = self.clock()
        async with self.pool.acquire() as conn:
            campaigns = await self._campaigns(conn, (CampaignStatus.ACTIVE,))
        return [c for c in campaigns if c.last_error is None and _in_window(c, now)]

    @translate_errors
    async def claim(self, campaign: Campaign, limit: int) -> list[ClaimedCall]:
        """Claim up to `limit` due calls of one campaign inside their calling hours
        (status scheduled → pending, claimed_by = this instance). Due calls whose
        number is on the do-not-call list are cancelled instead and the contact
        becomes do_not_call. The campaign's own max_concurrent_calls is honoured
        across instances by locking its row while counting."""
        if limit <= 0:
            return []
        now = self.clock()
        args = (
            campaign.timezone or self.default_timezone,
            campaign.calling_hours_start,
            campaign.calling_hours_end,
            campaign.calling_days,
        )
        if campaign.max_concurrent_calls is None:
            # One statement is atomic on its own: no BEGIN/COMMIT round trips per pass.
            rows = await self.pool.fetch(CLAIM_SQL, campaign.id, now, *args, limit, self.instance_id)
            return self._claimed(campaign, rows)
        async with self.pool.acquire() as conn, conn.transaction():
            if campaign.max_concurrent_calls is not None:
                await conn.execute("SELECT 1 FROM campaigns WHERE id = $1 FOR UPDATE", campaign.id)
                live = await conn.fetchval(
                    "SELECT count(*) FROM calls "
                    "WHERE campaign_id = $1 AND status IN ('pending', 'in_progress')",
                    campaign.id,
                )
                limit = min(limit, campaign.max_concurrent_calls - live)
                if limit <= 0:
                    return []
            rows = await conn.fetch(CLAIM_SQL, campaign.id, now, *args, limit, self.instance_id)
        return self._claimed(campaign, rows)

    def _claimed(self, campaign: Campaign, rows: Sequence[asyncpg.Record]) -> list[ClaimedCall]:
        from_number = campaign.caller_id or self.default_from_number
        return [
            ClaimedCall(
                id=r["id"],
                campaign_id=campaign.id,
                contact_id=r["contact_id"],
                retry_count=r["retry_count"],
                contact=Contact(
                    first_name=r["first_name"],
                    last_name=r["last_name"],
                    phone_number=r["phone_number"],
                    email=r["email"],
                    custom_fields=r["custom_fields"] or {},
                ),
                from_number=from_number,
                script_template=campaign.script_template,
                machine_detection=campaign.machine_detection,
                record_calls=campaign.record_calls,
                ring_timeout_seconds=campaign.ring_timeout_seconds,
                time_limit_seconds=campaign.time_limit_seconds,
            )
            for r in rows
        ]

    @translate_errors
    async def campaign_zones(self, campaign: Campaign) -> list[str]:
        """The distinct time zones of the contacts this campaign has open calls for (a
        scan of its due work: cache it). Live calls count too: one handed back, or
        followed by a retry, is due work again without a new zone appearing."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT coalesce(ct.resolved_timezone, $2) AS zone "
            "FROM calls k JOIN contacts ct ON ct.id = k.contact_id "
            "WHERE k.campaign_id = $1 AND k.status IN ('scheduled', 'pending', 'in_progress')",
            campaign.id,
            campaign.timezone or self.default_timezone,
        )
        return [r["zone"] for r in rows]

    @translate_errors
    async def any_zone_open(self, campaign: Campaign, zones: Sequence[str]) -> bool:
        """Whether it is inside the campaign's calling hours and days now in any of
        these zones, by the same SQL function the claim uses."""
        if not zones:
            return False
        return bool(
            await self.pool.fetchval(
                "SELECT coalesce(bool_or(dialer_in_calling_hours($1, z, $2, $3, $4)), false) "
                "FROM unnest($5::text[]) AS z",
                self.clock(),
                campaign.calling_hours_start,
                campaign.calling_hours_end,
                campaign.calling_days,
                list(zones),
            )
        )

    @translate_errors
    async def due_count(self, campaign_ids: Sequence[uuid.UUID], cap: int = 100_000) -> int:
        """Scheduled calls already due in these campaigns (capped: it is a gauge)."""
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM calls WHERE campaign_id = ANY($1::uuid[]) "
                "AND status = 'scheduled' AND scheduled_at <= $2 LIMIT $3) s",
                list(campaign_ids),
                self.clock(),
                cap,
            )
        )

    @translate_errors
    async def next_due_at(self, campaign_ids: Sequence[uuid.UUID]) -> datetime | None:
        """When the earliest scheduled call of these campaigns falls due."""
        value: datetime | None = await self.pool.fetchval(
            "SELECT min(scheduled_at) FROM calls "
            "WHERE campaign_id = ANY($1::uuid[]) AND status = 'scheduled'",
            list(campaign_ids),
        )
        return value

    # ------------------------------------------------------------------ dialing

    @translate_errors
    async def begin_dial(self, call_id: uuid.UUID) -> bool:
        """The gate right before a carrier request: succeeds only while the campaign
        is active, inside its window, and the contact inside calling hours — and
        records dialed_at first, so after a crash we know a request may have left."""
        now = self.clock()
        row = await self.pool.fetchrow(BEGIN_DIAL_SQL, call_id, now, self.instance_id, self.default_timezone)
        return row is not None

    @translate_errors
    async def release_claim(self, call_id: uuid.UUID) -> None:
        """A claimed call that was not dialed goes back: to scheduled (paused,
        outside hours, shutting down), or cancelled when its campaign is over."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                UPDATE calls k
                SET status = CASE WHEN c.status IN ('cancelled', 'completed') THEN 'cancelled'
                                  ELSE 'scheduled' END::call_status,
                    outcome = CASE WHEN c.status IN ('cancelled', 'completed')
                                   THEN 'campaign-' || c.status END,
                    claimed_by = NULL, claimed_at = NULL, dialed_at = NULL
                FROM campaigns c
                WHERE k.id = $1 AND k.status = 'pending' AND k.call_sid IS NULL AND c.id = k.campaign_id
                RETURNING k.status, k.campaign_id, k.contact_id
                """,
                call_id,
            )
            if row is not None and row["status"] == "cancelled":
                await conn.execute(
                    "UPDATE campaign_contacts SET call_status = 'cancelled' "
                    "WHERE campaign_id = $1 AND contact_id = $2 AND call_status IN ('pending', 'scheduled')",
                    row["campaign_id"],
                    row["contact_id"],
                )

    @translate_errors
    async def dial_accepted(self, call_id: uuid.UUID, call_sid: str) -> bool:
        """The carrier accepted the request: pending → in_progress with its sid, and
        the attempt counts. False when a callback got there first (already adopted).
        One statement: what a dial costs most under load is round trips."""
        return bool(await self.pool.fetchval(ADOPT_SQL, call_id, call_sid, self.clock()))

    @translate_errors
    async def dial_failed(
        self,
        call_id: uuid.UUID,
        intent: DialIntent,
        *,
        code: int | None = None,
        status: int | None = None,
        message: str = "",
    ) -> CallStatus:
        """The carrier request failed; `intent` says what that means for the attempt
        (the rules: sql/0008_attempt_end.sql). `code` is the carrier's error code,
        `status` the HTTP status. Returns the call's new status."""
        result = await self.pool.fetchval(
            DIAL_FAILED_SQL,
            call_id,
            intent.value,
            f"error:{code}" if code else "error",
            code or status,
            message[:500],
            self.clock(),
        )
        return CallStatus(result)

    @translate_errors
    async def adopted_sids(self, sids: Sequence[str]) -> set[str]:
        """Which of these carrier sids already belong to a call row."""
        rows = await self.pool.fetch(
            "SELECT call_sid FROM calls WHERE call_sid = ANY($1::text[])", list(sids)
        )
        return {r["call_sid"] for r in rows}

    # ----------------------------------------------------------- carrier events

    @translate_errors
    async def apply_call_event(self, call_id: uuid.UUID | None, event: CallEvent) -> ApplyResult:
        """Apply one carrier event (callback or fetch) in one transaction: the call
        moves only forward, a final status never changes, and a failed attempt
        schedules its retry or finalises the contact. Counters follow by trigger,
        and the status change NOTIFYs the coroutine waiting on any instance.

        The work is the SQL function dialer_apply_call_event (sql/0007): one
        autocommit round trip instead of BEGIN, SELECT … FOR UPDATE, two or three
        writes and COMMIT, which under load cost more in socket writes than the
        writes themselves, and held the call row locked across all of them."""
        row = await self.pool.fetchrow(
            APPLY_EVENT_SQL,
            call_id,
            event.call_sid,
            event.status,
            event.status in FINAL_TWILIO_STATUSES,
            event.error_code in PERMANENT_ERROR_CODES,
            event.duration,
            event.answered_by,
            event.error_code,
            event.error_message,
            event.timestamp,
            event.start_time,
            event.end_time,
            self.clock(),
        )
        assert row is not None  # a function with OUT parameters returns one row
        if row["result"] == "sid_mismatch":
            log.error(
                "callback_sid_mismatch",
                call_id=str(row["call_id"]),
                call_sid=event.call_sid,
                expected_sid=row["expected_sid"],
            )
            return ApplyResult.IGNORED
        return ApplyResult(row["result"])

    @translate_errors
    async def record_recording(
        self, call_id: uuid.UUID | None, call_sid: str, recording_url: str
    ) -> ApplyResult:
        """Store the recording URL of a call (at any status: it may come after the end)."""
        result = await self.pool.execute(
            "UPDATE calls SET recording_url = $3 WHERE (id = $1 OR call_sid = $2) AND call_sid = $2",
            call_id,
            call_sid,
            recording_url[:255],
        )
        return ApplyResult.APPLIED if result != "UPDATE 0" else ApplyResult.UNKNOWN

    # ------------------------------------------------------------ live calls

    @translate_errors
    async def call_statuses(self, call_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CallStatus]:
        """Current status of these calls (after a LISTEN reconnect, nothing is missed)."""
        rows = await self.pool.fetch(
            "SELECT id, status FROM calls WHERE id = ANY($1::uuid[])", list(call_ids)
        )
        return {r["id"]: CallStatus(r["status"]) for r in rows}

    @translate_errors
    async def call_endings(
        self, call_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[CallStatus, str | None]]:
        """Status and outcome of these calls, as the rows hold them (what a NOTIFY
        payload only claims)."""
        rows = await self.pool.fetch(
            "SELECT id, status, outcome FROM calls WHERE id = ANY($1::uuid[])", list(call_ids)
        )
        return {r["id"]: (CallStatus(r["status"]), r["outcome"]) for r in rows}

    @translate_errors
    async def live_call(self, call_id: uuid.UUID) -> LiveCall | None:
        """One live call with what following it needs."""
        rows = await self._live_calls("k.id = $1", call_id)
        return rows[0] if rows else None

    @translate_errors
    async def adopt_orphans(self, instance_timeout_seconds: float) -> list[LiveCall]:
        """Rescue: live calls held by instances that are dead (stopped, or silent for
        longer than the timeout) become this instance's. Those never sent
        (dialed_at NULL) go straight back to scheduled; the rest are returned for
        reconciliation with the carrier."""
        now = self.clock()
        stale = now - timedelta(seconds=instance_timeout_seconds)
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                UPDATE calls k SET claimed_by = $1
                WHERE k.status IN ('pending', 'in_progress') AND k.claimed_by IS DISTINCT FROM $1
                  AND NOT EXISTS (SELECT 1 FROM dialer_instances i WHERE i.id = k.claimed_by
                                  AND i.stopped_at IS NULL AND i.heartbeat_at >= $2)
                RETURNING k.id, k.status, k.dialed_at
                """,
                self.instance_id,
                stale,
            )
        if not rows:
            return []
        for r in rows:
            if r["status"] == CallStatus.PENDING and r["dialed_at"] is None:
                await self.release_claim(r["id"])
        ids = [r["id"] for r in rows if not (r["status"] == CallStatus.PENDING and r["dialed_at"] is None)]
        log.info("orphans_adopted", count=len(rows), to_reconcile=len(ids))
        return await self._live_calls("k.id = ANY($1::uuid[])", ids) if ids else []

    @translate_errors
    async def my_live_calls(self) -> list[LiveCall]:
        """Live calls this instance holds (after a restart with the same id, or for tests)."""
        return await self._live_calls(
            "k.claimed_by = $1 AND k.status IN ('pending', 'in_progress')", self.instance_id
        )

    async def _live_calls(self, where: str, arg: Any) -> list[LiveCall]:
        rows = await self.pool.fetch(
            f"""
            SELECT k.id, k.campaign_id, k.status, k.call_sid, k.dialed_at, ct.phone_number,
                   coalesce(c.caller_id, $2) AS from_number, c.ring_timeout_seconds, c.time_limit_seconds
            FROM calls k JOIN contacts ct ON ct.id = k.contact_id JOIN campaigns c ON c.id = k.campaign_id
            WHERE {where}
            """,
            arg,
            self.default_from_number,
        )
        return [
            LiveCall(
                id=r["id"],
                campaign_id=r["campaign_id"],
                status=CallStatus(r["status"]),
                call_sid=r["call_sid"],
                dialed_at=r["dialed_at"],
                phone_number=r["phone_number"],
                from_number=r["from_number"],
                ring_timeout_seconds=r["ring_timeout_seconds"],
                time_limit_seconds=r["time_limit_seconds"],
            )
            for r in rows
        ]

    @translate_errors
    async def return_unstarted(self) -> int:
        """Shutdown: calls this instance claimed but never sent go back to scheduled."""
        result = await self.pool.execute(
            "UPDATE calls SET status = 'scheduled', claimed_by = NULL, claimed_at = NULL "
            "WHERE claimed_by = $1 AND status = 'pending' AND dialed_at IS NULL",
            self.instance_id,
        )
        return int(result.split()[-1])

    @translate_errors
    async def call_for_twiml(self, call_id: uuid.UUID) -> tuple[str | None, Contact] | None:
        """The script template and contact of a call, to serve its TwiML document."""
        row = await self.pool.fetchrow(
            """
            SELECT c.script_template, ct.first_name, ct.last_name, ct.phone_number, ct.email, ct.custom_fields
            FROM calls k JOIN campaigns c ON c.id = k.campaign_id JOIN contacts ct ON ct.id = k.contact_id
            WHERE k.id = $1
            """,
            call_id,
        )
        if row is None:
            return None
        contact = Contact(
            first_name=row["first_name"],
            last_name=row["last_name"],
            phone_number=row["phone_number"],
            email=row["email"],
            custom_fields=row["custom_fields"] or {},
        )
        return row["script_template"], contact


# The carrier accepted a request: the adoption, in its one place (sql/0008).
ADOPT_SQL = "SELECT dialer_adopt_call($1, $2, $3)"

# A failed carrier request, with the engine's intent (sql/0008).
DIAL_FAILED_SQL = "SELECT dialer_dial_failed($1, $2, $3, $4, $5, $6)"

# One carrier event, applied server-side (sql/0007, its rules in sql/0008).
APPLY_EVENT_SQL = """
SELECT result, call_id, expected_sid
FROM dialer_apply_call_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
"""

# One activation batch: pending contacts whose number has been checked become
# `scheduled` with their next call, or `invalid_number`; only while the campaign is
# still active. A contact an operator reset to pending after it had calls gets the
# next attempt number while retries remain, else `failed` (never a dial beyond
# max_retries + 1). Returns (contacts marked, calls created).
ACTIVATE_BATCH_SQL = """
WITH picked AS (
    SELECT cc.id, cc.contact_id, ct.number_valid, c.max_retries,
           (SELECT max(k.retry_count) FROM calls k
            WHERE k.campaign_id = $1 AND k.contact_id = cc.contact_id) AS last_try
    FROM campaign_contacts cc
    JOIN contacts ct ON ct.id = cc.contact_id
    JOIN campaigns c ON c.id = cc.campaign_id AND c.status = 'active'
    WHERE cc.campaign_id = $1 AND cc.call_status = 'pending' AND ct.checked_at IS NOT NULL
    LIMIT $3
    FOR UPDATE OF cc SKIP LOCKED
), marked AS (
    UPDATE campaign_contacts cc
    SET call_status = CASE WHEN NOT p.number_valid THEN 'invalid_number'
                           WHEN p.last_try IS NULL OR p.last_try < p.max_retries THEN 'scheduled'
                           ELSE 'failed' END
    FROM picked p WHERE cc.id = p.id
    RETURNING cc.contact_id, cc.call_status, coalesce(p.last_try + 1, 0) AS attempt
), inserted AS (
    -- ON CONFLICT: a contact reset while it still has an open call keeps that call.
    INSERT INTO calls (campaign_id, contact_id, status, retry_count, scheduled_at)
    SELECT $1, contact_id, 'scheduled', attempt, $2 FROM marked WHERE call_status = 'scheduled'
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked) AS marked, (SELECT count(*) FROM inserted) AS inserted
"""

CLAIM_SQL = """
WITH candidates AS (
    SELECT k.id, k.contact_id, ct.phone_number
    FROM calls k
    JOIN contacts ct ON ct.id = k.contact_id
    WHERE k.campaign_id = $1 AND k.status = 'scheduled' AND k.scheduled_at <= $2
      AND ct.number_valid
      -- The scheduler's campaign list is cached between housekeeping passes: the
      -- claim itself re-checks that the campaign is still dialable right now.
      AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = $1 AND c.status = 'active'
                  AND c.last_error IS NULL
                  AND (c.schedule_start IS NULL OR c.schedule_start <= $2)
                  AND (c.schedule_end IS NULL OR $2 <= c.schedule_end))
      AND dialer_in_calling_hours($2, coalesce(ct.resolved_timezone, $3), $4, $5, $6)
      AND NOT EXISTS (SELECT 1 FROM calls l WHERE l.contact_id = k.contact_id
                      AND l.status IN ('pending', 'in_progress'))
    ORDER BY k.scheduled_at
    LIMIT $7
    FOR UPDATE OF k SKIP LOCKED
), flagged AS MATERIALIZED (
    -- Materialized: inlined, the do-not-call probe ran once per CASE below.
    SELECT cand.id, cand.contact_id,
           EXISTS (SELECT 1 FROM do_not_call d WHERE d.phone_number = cand.phone_number) AS blocked
    FROM candidates cand
), claimed AS (
    UPDATE calls k
    SET status = CASE WHEN f.blocked THEN 'cancelled' ELSE 'pending' END::call_status,
        outcome = CASE WHEN f.blocked THEN 'do-not-call' END,
        claimed_by = CASE WHEN f.blocked THEN NULL ELSE $8::uuid END,
        claimed_at = $2
    FROM flagged f
    WHERE k.id = f.id
    RETURNING k.id, k.contact_id, k.retry_count, k.status
), blocked AS (
    UPDATE campaign_contacts cc SET call_status = 'do_not_call'
    FROM claimed
    WHERE claimed.status = 'cancelled' AND cc.campaign_id = $1 AND cc.contact_id = claimed.contact_id
)
SELECT claimed.id, claimed.contact_id, claimed.retry_count,
       ct.first_name, ct.last_name, ct.phone_number, ct.email, ct.custom_fields
FROM claimed JOIN contacts ct ON ct.id = claimed.contact_id
WHERE claimed.status = 'pending'
"""

BEGIN_DIAL_SQL = """
UPDATE calls k SET dialed_at = $2
FROM campaigns c, contacts ct
WHERE k.id = $1 AND k.status = 'pending' AND k.claimed_by = $3 AND k.dialed_at IS NULL
  AND c.id = k.campaign_id AND c.status = 'active' AND c.last_error IS NULL
  AND (c.schedule_start IS NULL OR c.schedule_start <= $2)
  AND (c.schedule_end IS NULL OR $2 <= c.schedule_end)
  AND ct.id = k.contact_id
  AND dialer_in_calling_hours($2, coalesce(ct.resolved_timezone, c.timezone, $4),
                              c.calling_hours_start, c.calling_hours_end, c.calling_days)
RETURNING k.id
"""


def _in_window(c: Campaign, now: datetime) -> bool:
    return (c.schedule_start is None or c.schedule_start <= now) and (
        c.schedule_end is None or now <= c.schedule_end
    )


def _check_number(phone_number: str) -> tuple[bool, str | None]:
    try:
        parsed = numbers.parse(phone_number)
    except numbers.InvalidNumber:
        return False, None
    # Stored numbers must already be E.164: "911234567" is not dialable as is.
    return parsed.e164 == phone_number, parsed.implied_timezone


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
