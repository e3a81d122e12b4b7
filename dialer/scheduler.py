"""The scheduler loop (docs/architecture.md): a notification only wakes it; it always re-reads
the database. Each pass runs housekeeping (activation, completion, expiry), rescues
calls of dead instances, and claims due calls for the free slots of the pool —
never more than the pool can run, nor more than the shared pacer will let it dial
within about a second, so a claimed call does not sit claimed for long."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from dialer.errors import DatabaseUnavailable
from dialer.metrics import Metrics
from dialer.models import CallStatus, Campaign, ClaimedCall
from dialer.pacing import SharedPacer
from dialer.pool import CallPool
from dialer.store.claims import DueCounts
from dialer.store.live import LiveCall

log = structlog.get_logger(__name__)

HOUSEKEEPING_INTERVAL = 0.25  # seconds between housekeeping passes, unless woken by NOTIFY
HEARTBEAT_INTERVAL = 5.0  # seconds, at most: never more than a third of instance_timeout_seconds
RESCUE_INTERVAL = 5.0  # seconds
GAUGE_INTERVAL = 5.0  # seconds between due-queue depth counts
CLAIM_HORIZON = 1.0  # seconds of dialing at this instance's rate that one pass may claim
# Seconds a campaign's set of contact zones is trusted at most. New calls, a NOTIFY
# and an empty set end the trust sooner (_open_now); the limit only bounds what none
# of them signals (an operator changing a contact's zone).
ZONES_TTL = 60.0
# A freed slot wakes the loop, and at full load slots free one by one: a pass per slot
# was two statements (campaign list, claim) per call. Waiting this long after such a
# wake lets one claim serve the slots freed meanwhile; a NOTIFY never waits.
COALESCE_SECONDS = 0.01
COALESCE_SHARE = 10  # coalesce while fewer than 1/COALESCE_SHARE of the pool's slots are free


class SchedulerStore(Protocol):
    """What the scheduler needs from the database (`dialer.store.lifecycle.LifecycleStore`).

    Every coroutine is one short transaction behind the error boundary (a lost
    database raises `DatabaseUnavailable`, and the pass is retried next tick). The
    claim re-checks the campaign, calling hours and the contacts in SQL, so what the
    scheduler caches can only cost an empty claim, never a wrong dial."""

    @property
    def clock(self) -> Callable[[], datetime]:
        """The store's clock (naive UTC)."""
        ...

    async def heartbeat(self, dial_rate: float = 0.0, rate_share: float | None = None) -> None:
        """Mark this instance alive."""
        ...

    async def adopt_orphans(self, instance_timeout_seconds: float) -> list[LiveCall]:
        """Take over the live calls of instances silent for longer than the timeout."""
        ...

    async def my_live_calls(self) -> list[LiveCall]:
        """The live calls the database says this instance holds."""
        ...

    async def release_claim(self, call_id: uuid.UUID) -> None:
        """Hand a claimed call that was never dialed back to the schedule."""
        ...

    async def housekeep(self) -> bool:
        """Activation, expiry, cancellation and completion of campaigns."""
        ...

    async def dialable_campaigns(self) -> list[Campaign]:
        """The campaigns that may be dialed now."""
        ...

    async def claim(self, campaign: Campaign, limit: int) -> list[ClaimedCall]:
        """Claim up to `limit` due calls of the campaign for this instance."""
        ...

    async def campaign_zones(self, campaign: Campaign) -> list[str]:
        """The time zones of the campaign's open calls."""
        ...

    async def any_zone_open(self, campaign: Campaign, zones: Sequence[str]) -> bool:
        """Whether any of these zones is inside the campaign's calling hours now."""
        ...

    async def due_counts(self, campaign_ids: Sequence[uuid.UUID], cap: int = 100_000) -> DueCounts:
        """How many calls of these campaigns are due, dialable now or held (up to `cap`)."""
        ...

    async def next_due_at(self, campaign_ids: Sequence[uuid.UUID]) -> datetime | None:
        """When the next scheduled call of these campaigns falls due."""
        ...


@dataclass(frozen=True)
class _Zones:
    """The zones of a campaign's open calls, and what they were taken under."""

    taken_at: float  # monotonic
    generation: int  # the scheduler's NOTIFY generation when the query started
    total_calls: int  # the campaign's call count the query was read against
    zones: list[str]

    def current(self, campaign: Campaign, generation: int, now: float) -> bool:
        """Whether nothing since the scan can have added a zone (as far as we know)."""
        return (
            self.generation == generation
            and self.total_calls == campaign.total_calls
            and now - self.taken_at <= ZONES_TTL
        )


class Scheduler:
    """Owns the loop; the service owns the Scheduler."""

    def __init__(
        self,
        *,
        store: SchedulerStore,
        pool: CallPool,
        pacer: SharedPacer,
        metrics: Metrics,
        tick_seconds: float,
        instance_timeout_seconds: float,
        watchdog: Callable[[], object] = lambda: None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.pacer = pacer
        self.metrics = metrics
        self.tick = tick_seconds
        self.instance_timeout = instance_timeout_seconds
        # Others judge this instance dead once its heartbeat is older than the timeout
        # (and take its calls, and its part of the dial rate): beat well within it.
        self.heartbeat_interval = min(HEARTBEAT_INTERVAL, instance_timeout_seconds / 3)
        self.watchdog = watchdog
        self._wake = asyncio.Event()
        self._housekeeping_due = True
        # Dialable campaigns as of the last housekeeping pass (None: read them again).
        # Claims re-check the campaign in SQL, so a stale entry costs nothing but an
        # empty claim, and a NOTIFY forces housekeeping, which drops the cache.
        self._campaigns: list[Campaign] | None = None
        self._rotation = 0
        self._zones: dict[uuid.UUID, _Zones] = {}
        self._zones_generation = 0  # bumped by every campaign NOTIFY
        self._last = {"housekeeping": 0.0, "heartbeat": 0.0, "rescue": 0.0, "gauge": 0.0}
        self.passes = 0

    def wake(self, housekeeping: bool = False) -> None:
        """Run a pass now (NOTIFY arrived, a slot was freed)."""
        if housekeeping:
            self._housekeeping_due = True
        self._wake.set()

    def on_campaign_notification(self, _payload: str) -> None:
        """A campaign changed status or settings, or contacts were added."""
        self._zones.clear()
        # A zone query already in flight started before this change: its answer must
        # not be stored as current (_open_now compares generations).
        self._zones_generation += 1
        self.wake(housekeeping=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set. A failing pass is logged and retried next tick:
        the loop itself never dies of a database error."""
        while not stop.is_set():
            self._wake.clear()
            sleep_for = self.tick
            try:
                sleep_for = await self.step()
            except DatabaseUnavailable as exc:
                self.metrics.db_errors.inc()
                log.warning("scheduler_pass_failed", error=str(exc))
            self.watchdog()
            woken = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep_for):
                    await self._wake.wait()
                    woken = True
            if woken and not self._housekeeping_due and not stop.is_set():
                await self._coalesce()

    async def _coalesce(self) -> None:
        """Woken by a freed slot while few are free: let a few more free up first, so
        one pass claims for all of them (bounded: one short sleep)."""
        if self.pool.free_slots() * COALESCE_SHARE < self.pool.max_concurrent_calls:
            await asyncio.sleep(COALESCE_SECONDS)

    async def step(self) -> float:
        """One pass. Returns how long to sleep unless woken."""
        self.passes += 1
        now = time.monotonic()
        if now - self._last["heartbeat"] >= self.heartbeat_interval:
            await self.store.heartbeat(self.pacer.dial_rate(), self.pacer.rate)
            self._last["heartbeat"] = now
        if now - self._last["rescue"] >= RESCUE_INTERVAL:
            self._last["rescue"] = now
            for call in await self.store.adopt_orphans(self.instance_timeout):
                self.pool.resume(call)
            await self._rescue_own()
        if self._housekeeping_due or now - self._last["housekeeping"] >= HOUSEKEEPING_INTERVAL:
            self._housekeeping_due = False
            self._last["housekeeping"] = now
            await self.store.housekeep()
            self._campaigns = None  # housekeeping may have activated, completed or expired some
        if now - self._last["gauge"] >= GAUGE_INTERVAL:
            # Counted before the early returns: a full pool is when a backlog grows.
            self._last["gauge"] = now
            await self._count_due()
        if self.pool.free_slots() <= 0:
            return self.tick  # a freed slot wakes the loop
        campaigns = await self._dialable()
        if not campaigns:
            return self.tick
        exhausted = await self._claim(campaigns)
        if exhausted:
            # Limited by slots or pace, not by due work: a freed slot wakes us; the
            # pacer frees room at this instance's rate.
            return min(self.tick, 1.0 / self.pacer.rate)
        return await self._sleep_hint(campaigns)

    async def _dialable(self) -> list[Campaign]:
        """The dialable campaigns, cached until the next housekeeping pass."""
        if self._campaigns is None:
            self._campaigns = await self.store.dialable_campaigns()
            self._prune_metrics(self._campaigns)
        return self._campaigns

    async def _count_due(self) -> None:
        """dialer_due_calls{state}: due calls that could be dialed now, and those held
        by their contact's calling hours or days (an alert on the first does not fire
        all night, docs/operations.md#metrics)."""
        campaigns = await self._dialable()
        counts = await self.store.due_counts([c.id for c in campaigns]) if campaigns else None
        self.metrics.queue_depth.labels(state="dialable").set(counts.dialable if counts else 0)
        self.metrics.queue_depth.labels(state="held").set(counts.held if counts else 0)

    def _prune_metrics(self, campaigns: list[Campaign]) -> None:
        """Per-campaign series live while the campaign is dialable or has calls here:
        a finished campaign's go, so the label stays bounded (docs/operations.md)."""
        dialable = {str(c.id) for c in campaigns}
        self.metrics.prune_campaigns(lambda cid: cid in dialable or self.pool.live_in(uuid.UUID(cid)) > 0)

    async def _rescue_own(self) -> None:
        """Calls the database says this instance holds but no coroutine of its pool
        follows: a claim whose reply was lost with its connection, or a call coroutine
        that died of an error. Rescue of dead instances cannot see them (this one is
        alive), so without this they would stay live forever and the campaign would
        never complete. Runs in the scheduler's own task, never between a claim and
        pool.start(), so a call just claimed is never mistaken for one."""
        for call in await self.store.my_live_calls():
            if self.pool.holds(call.id):
                continue
            if call.status is CallStatus.PENDING and call.dialed_at is None:
                await self.store.release_claim(call.id)  # no request ever left
                log.warning("own_claim_released", call_id=str(call.id))
            else:
                log.warning("own_call_resumed", call_id=str(call.id), status=call.status.value)
                self.pool.resume(call)

    async def _open_now(self, campaign: Campaign) -> bool:
        """Whether any contact of the campaign can be called now: inside calling
        hours, on a local date that is no holiday of its calendar nor a blackout day.
        When none can (a Spanish campaign at night, or on a holiday), the claim would
        walk every due call to find none: at a million due calls that is seconds of
        database time per pass, all night or all day. One cheap query on the
        campaign's few zones answers it, by the claim's own SQL function.

        The zones are a cached scan, so they may only hold work back while they are
        known to be current: never when empty (taken before anything was scheduled:
        no zone is known, so the claim decides), never once the campaign's call count
        moved (activation, here or on another instance, or a retry added calls whose
        zones the set may lack), never across a NOTIFY, and never past ZONES_TTL."""
        if (
            campaign.calling_days is None
            and (campaign.calling_hours_start is None or campaign.calling_hours_end is None)
            and campaign.holiday_calendar is None
            and not campaign.blackout_near
        ):
            return True  # nothing can close it: no query
        now = time.monotonic()
        cached = self._zones.get(campaign.id)
        if cached is None or not cached.current(campaign, self._zones_generation, now):
            generation = self._zones_generation
            zones = await self.store.campaign_zones(campaign)
            cached = _Zones(now, generation, campaign.total_calls, zones)
            if zones and generation == self._zones_generation:
                self._zones[campaign.id] = cached
            else:
                self._zones.pop(campaign.id, None)
        if not cached.zones:
            return True
        return await self.store.any_zone_open(campaign, cached.zones)

    async def _claim(self, campaigns: list[Campaign]) -> bool:
        """Claim for this pass's budget; True when the whole budget was used, or a
        campaign's own rate held its part back."""
        budget = min(self.pool.free_slots(), self.pacer.available_within(CLAIM_HORIZON))
        if budget <= 0:
            return True
        campaigns = [c for c in campaigns if await self._open_now(c)]
        if not campaigns:
            return False
        # Rotate the starting campaign so that one large campaign cannot starve others.
        self._rotation = (self._rotation + 1) % len(campaigns)
        order = campaigns[self._rotation :] + campaigns[: self._rotation]
        share = max(1, budget // len(order))
        paced = False  # a campaign got less than its part because of its own rate
        for i, campaign in enumerate(order):
            if budget <= 0:
                break
            want = budget if i == len(order) - 1 else min(budget, share)
            if campaign.calls_per_second is not None:
                # Its calls wait for slots of its own: claim no more than it may dial soon.
                soon = self.pacer.available_within(CLAIM_HORIZON, campaign.id, campaign.calls_per_second)
                paced = paced or soon < want
                want = min(want, soon)
            claimed = await self.store.claim(campaign, want)
            for call in claimed:
                self.pool.start(call)
            budget -= len(claimed)
        # Held back by a campaign's own rate is limited by pace too: the next pass
        # comes at the pacer's pace, not a tick later.
        return budget <= 0 or paced

    async def _sleep_hint(self, campaigns: list[Campaign]) -> float:
        """Nothing more is claimable now: sleep until the next call falls due (a
        retry), but never longer than a tick. A due call held back by calling hours
        leaves next_due in the past: then a tick it is."""
        nxt: datetime | None = await self.store.next_due_at([c.id for c in campaigns])
        if nxt is None:
            return self.tick
        wait = (nxt - self.store.clock()).total_seconds()
        return self.tick if wait <= 0 else min(self.tick, wait)
