"""Housekeeping: the campaign-level work of each scheduler pass — checking new
contacts' numbers, finishing cancelled and expired campaigns, validating active
ones, completing those with nothing left, and activation (docs/architecture.md,
steps 1 and 7; docs/campaigns.md#lifecycle)."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from datetime import datetime
from typing import Final

import structlog

from dialer import numbers
from dialer.database import translate_errors
from dialer.models import Campaign, CampaignStatus
from dialer.store.base import Conn, StoreBase, campaigns_in, in_window
from dialer.store.calendars import refresh_calendars
from dialer.validation import campaign_problem

log = structlog.get_logger(__name__)

HOUSEKEEPING_LOCK = 0x6469616C6572_01  # one instance at a time runs housekeeping
ACTIVATION_BATCH = 10_000  # campaign contacts scheduled per statement
ACTIVATION_BUDGET = 1.0  # seconds of activation per housekeeping pass
ACTIVATION_WORKERS = 2  # batches in flight at once
# The dial frontier (docs/architecture.md#activation): a campaign keeps up to
# FRONTIER calls due and inside calling hours ahead of its dialing, topped up once
# fewer than FRONTIER_LOW remain; a full frontier is looked at again after
# FRONTIER_RECHECK seconds (the look walks FRONTIER_LOW due calls: ~40 ms on a small
# server). At 100 calls/s the low-water mark is 100 s of dialing.
FRONTIER = 20_000
FRONTIER_LOW = 10_000
FRONTIER_RECHECK = 5.0
CHECK_BATCH = 2_000  # contacts whose number is checked per pass


class HousekeepingStore(StoreBase):
    """The work that must run on one instance at a time, and activation."""

    # Instance attributes in effect (tests shrink them); see the module constants.
    frontier: int = FRONTIER
    frontier_low: int = FRONTIER_LOW
    frontier_recheck: float = FRONTIER_RECHECK

    _LOCK: Final = "SELECT pg_try_advisory_xact_lock($1)"
    _SET_LAST_ERROR: Final = "UPDATE campaigns SET last_error = $2 WHERE id = $1"

    @translate_errors
    async def housekeep(self) -> bool:
        """One pass of the work that must run on one instance at a time: check new
        contacts' numbers, finish cancelled and expired campaigns, load the holiday
        calendars campaigns name (when new, or daily), validate active
        ones, complete those with nothing left; then activate (which is safe on any
        number of instances at once, and runs in short batches of its own). Returns
        False when another instance holds the housekeeping lock."""
        await self.check_contacts()
        runnable: list[Campaign] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(self._LOCK, HOUSEKEEPING_LOCK):
                return False
            now = self.clock()
            await self._finish_cancelled(conn)
            await self._expire(conn, now)
            await refresh_calendars(conn, now)
            zones = await self._known_zones(conn)
            for campaign in await campaigns_in(conn, (CampaignStatus.ACTIVE,)):
                problem = campaign_problem(
                    campaign,
                    now,
                    known_zones=zones,
                    validate_template=self.validate_template,
                    default_from_number=self.default_from_number,
                )
                if problem != campaign.last_error:
                    await conn.execute(self._SET_LAST_ERROR, campaign.id, problem)
                    if problem:
                        log.error("campaign_invalid", campaign_id=str(campaign.id), reason=problem)
                    else:
                        log.info("campaign_valid_again", campaign_id=str(campaign.id))
                if not problem and in_window(campaign, now):
                    runnable.append(campaign)
            await self._complete(conn)
        deadline = time.monotonic() + ACTIVATION_BUDGET
        for campaign in runnable:
            await self._activate(campaign, now, deadline)
        return True

    _ZONES: Final = "SELECT name FROM pg_timezone_names"

    async def _known_zones(self, conn: Conn) -> frozenset[str]:
        if self._zones is None:
            rows = await conn.fetch(self._ZONES)
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

    _UNCHECKED: Final = """
        SELECT id, phone_number, timezone FROM contacts WHERE checked_at IS NULL
        LIMIT $1 FOR UPDATE SKIP LOCKED
    """
    _MARK_CHECKED: Final = """
        UPDATE contacts c SET checked_at = $4, number_valid = v.valid, resolved_timezone = v.zone
        FROM unnest($1::uuid[], $2::boolean[], $3::text[]) AS v(id, valid, zone)
        WHERE c.id = v.id
    """

    async def _check_contact_batch(self, conn: Conn) -> int:
        # Own zone if PostgreSQL knows it, else the one the number implies.
        zones = await self._known_zones(conn)
        rows = await conn.fetch(self._UNCHECKED, CHECK_BATCH)
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
        await conn.execute(self._MARK_CHECKED, ids, valid, resolved, self.clock())
        return len(rows)

    # One activation batch of at most $3: pending contacts whose number has been
    # checked become `scheduled` with their next call, or `invalid_number`; only while
    # the campaign is still active. A contact an operator reset to pending after it had
    # calls gets the next attempt number while retries remain, else `failed` (never a
    # dial beyond max_retries + 1). Returns (contacts marked, calls created).
    ACTIVATE_BATCH_SQL: Final = """
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

    # The frontier of campaign $1 at $2: of its first $3 due scheduled calls (in no
    # particular order; $3 is the low-water mark, all the answer needs), how many may
    # be called now — inside the campaign's calling hours and days in the contact's
    # zone ($4: the campaign's zone or the default), on a date that is no holiday or
    # blackout day. Judged once per zone. The cap only ever undercounts, which
    # activates more, never less.
    FRONTIER_SQL: Final = """
        WITH due AS (
            SELECT k.contact_id FROM calls k
            WHERE k.campaign_id = $1 AND k.status = 'scheduled' AND k.scheduled_at <= $2
            LIMIT $3
        ), zones AS (
            SELECT coalesce(ct.resolved_timezone, $4) AS zone, count(*) AS n
            FROM due JOIN contacts ct ON ct.id = due.contact_id
            GROUP BY 1
        )
        SELECT coalesce(sum(z.n) FILTER (
                   WHERE dialer_may_call($2, z.zone, c.calling_hours_start, c.calling_hours_end,
                                         c.calling_days, c.id, c.holiday_calendar)), 0)
        FROM zones z, campaigns c WHERE c.id = $1
    """
    _ANY_PENDING: Final = """
        SELECT EXISTS (SELECT 1 FROM campaign_contacts
                       WHERE campaign_id = $1 AND call_status = 'pending')
    """

    @functools.cached_property
    def _frontier_full_until(self) -> dict[uuid.UUID, float]:
        """Campaigns whose frontier was found full, and until when (monotonic) that
        answer is trusted."""
        return {}

    async def _activation_wanted(self, c: Campaign, now: datetime) -> int:
        """How many contacts of the campaign to schedule now: enough to fill its
        frontier when fewer than `frontier_low` of its due calls may be called now,
        else none. Contacts in zones outside their hours do not count, so they never
        hold back those in open zones: while most due calls wait for their hours,
        activation goes on (eagerly, as it once always did)."""
        if self._frontier_full_until.get(c.id, 0.0) > time.monotonic():
            return 0
        if not await self.pool.fetchval(self._ANY_PENDING, c.id):
            self._frontier_full_until.pop(c.id, None)
            return 0
        zone = c.timezone or self.default_timezone
        ready = int(await self.pool.fetchval(self.FRONTIER_SQL, c.id, now, self.frontier_low, zone))
        if ready >= self.frontier_low:
            self._frontier_full_until[c.id] = time.monotonic() + self.frontier_recheck
            return 0
        return self.frontier - ready

    async def _activate(self, c: Campaign, now: datetime, deadline: float) -> int:
        """Give contacts their first scheduled call (or invalid_number) up to the
        campaign's dial frontier (`_activation_wanted`): a million-contact campaign
        starts dialing within a second or two, and the rest is scheduled as dialing
        reaches it, at the cost per contact of a small campaign. One set-based
        statement and one short transaction per batch, until the frontier is full,
        nothing is pending, or the pass's time budget runs out. Batches are
        independent (SKIP LOCKED, ON CONFLICT), so two run side by side: index
        maintenance is CPU-bound in the server, and a second backend uses the second
        core."""
        wanted = await self._activation_wanted(c, now)
        if wanted <= 0:
            return 0
        batch = min(ACTIVATION_BATCH, -(-wanted // ACTIVATION_WORKERS))
        left = [wanted]  # shared by both workers: each takes its batch from it

        async def worker() -> int:
            created = 0
            while left[0] > 0:
                size = min(batch, left[0])
                left[0] -= size
                row = await self.pool.fetchrow(self.ACTIVATE_BATCH_SQL, c.id, now, size)
                assert row is not None  # an aggregate always returns one row
                created += int(row["inserted"])
                # Marked but not scheduled (invalid, out of retries) leaves room.
                left[0] += int(row["marked"]) - int(row["inserted"])
                if row["marked"] < size or time.monotonic() >= deadline:
                    left[0] = 0
            return created

        created = sum(await asyncio.gather(*(worker() for _ in range(ACTIVATION_WORKERS))))
        if created:
            log.info("campaign_activated", campaign_id=str(c.id), calls_created=created)
        return created

    _CANCEL_SCHEDULED_OF_CANCELLED: Final = """
        UPDATE calls k SET status = 'cancelled', outcome = 'campaign-cancelled'
        FROM campaigns c
        WHERE c.status = 'cancelled' AND k.campaign_id = c.id AND k.status = 'scheduled'
    """
    _CANCEL_CONTACTS_OF_CANCELLED: Final = """
        UPDATE campaign_contacts cc SET call_status = 'cancelled'
        FROM campaigns c
        WHERE c.status = 'cancelled' AND cc.campaign_id = c.id
          AND cc.call_status IN ('pending', 'scheduled')
          AND NOT EXISTS (SELECT 1 FROM calls k WHERE k.campaign_id = c.id
                          AND k.contact_id = cc.contact_id AND k.status IN ('pending', 'in_progress'))
    """

    async def _finish_cancelled(self, conn: Conn) -> None:
        """Cancelled (docs/campaigns.md#lifecycle): scheduled calls and unfinished
        contacts are cancelled; live calls finish on their own and are recorded."""
        await conn.execute(self._CANCEL_SCHEDULED_OF_CANCELLED)
        await conn.execute(self._CANCEL_CONTACTS_OF_CANCELLED)

    _EXPIRE: Final = """
        UPDATE campaigns SET status = 'completed'
        WHERE status IN ('active', 'paused') AND schedule_end IS NOT NULL AND schedule_end < $1
          AND total_calls > 0
        RETURNING id
    """
    _CANCEL_SCHEDULED_OF_EXPIRED: Final = (
        "UPDATE calls SET status = 'cancelled', outcome = 'campaign-ended' "
        "WHERE campaign_id = $1 AND status = 'scheduled'"
    )
    _CANCEL_CONTACTS_OF_EXPIRED: Final = """
        UPDATE campaign_contacts cc SET call_status = 'cancelled'
        WHERE cc.campaign_id = $1 AND cc.call_status IN ('pending', 'scheduled')
          AND NOT EXISTS (SELECT 1 FROM calls k WHERE k.campaign_id = $1
                          AND k.contact_id = cc.contact_id AND k.status IN ('pending', 'in_progress'))
    """

    async def _expire(self, conn: Conn, now: datetime) -> None:
        """docs/campaigns.md#lifecycle: when schedule_end passes the campaign is
        completed and its unfinished contacts and their scheduled calls are cancelled.
        Only a campaign that ran (has calls): one started with its end already past
        cannot run, and validation reports it instead of cancelling every contact."""
        for row in await conn.fetch(self._EXPIRE, now):
            await conn.execute(self._CANCEL_SCHEDULED_OF_EXPIRED, row["id"])
            await conn.execute(self._CANCEL_CONTACTS_OF_EXPIRED, row["id"])
            log.info("campaign_expired", campaign_id=str(row["id"]))

    _COMPLETE: Final = """
        UPDATE campaigns c SET status = 'completed'
        WHERE c.status = 'active'
          AND EXISTS (SELECT 1 FROM campaign_contacts cc WHERE cc.campaign_id = c.id)
          AND NOT EXISTS (SELECT 1 FROM campaign_contacts cc WHERE cc.campaign_id = c.id
                          AND cc.call_status IN ('pending', 'scheduled', 'in_progress'))
          AND NOT EXISTS (SELECT 1 FROM calls k WHERE k.campaign_id = c.id
                          AND k.status IN ('scheduled', 'pending', 'in_progress'))
        RETURNING c.id
    """

    async def _complete(self, conn: Conn) -> None:
        """Active campaigns whose every contact is final become completed. A campaign
        with no contacts at all stays active: contacts may still be added."""
        for row in await conn.fetch(self._COMPLETE):
            log.info("campaign_completed", campaign_id=str(row["id"]))


def _check_number(phone_number: str) -> tuple[bool, str | None]:
    try:
        parsed = numbers.parse(phone_number)
    except numbers.InvalidNumber:
        return False, None
    # Stored numbers must already be E.164: "911234567" is not dialable as is.
    return parsed.e164 == phone_number, parsed.implied_timezone
