"""The dial rate, shared by every instance of the database (docs/architecture.md#pacing).

`dialer.calls_per_second` is the Twilio account's rate, so it bounds the dials of all
instances together. Dials go out on one grid of slots on the database's clock, 1/rate
apart (`dialer_take_dial_slots`, sql/0016); this module is an instance's side of it.
It takes a few slots at a time for the calls waiting to dial, places each on its own
monotonic clock, and lets one call through per slot, in arrival order: one task per
scope (the account, or a capped campaign) wakes at each slot and lets through every
call whose slot has come, so a loop that wakes late catches up at once. A slot whose
moment passed by more than a grace is let go, never used late: it could bunch with
other instances' dials, and a slot kept for later would be a burst. So no one-second
window holds more than rate + bucket_size dials (docs/invariants.md#9).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from dialer.errors import DatabaseUnavailable
from dialer.metrics import Metrics
from dialer.models import DialSlots

log = structlog.get_logger(__name__)

# How far ahead a grant reaches (the database adds one interval per live instance,
# so a newcomer always finds a free slot): what a dead instance can leave unused, the
# size of a batch (rate * horizon / instances: one statement for that many dials), and
# how long a newcomer may wait for its first slot.
HORIZON_SECONDS = 0.5
# Parts of the allowed lateness (lateness_allowed): a call is let through on a slot
# at most WAKE_SHARE of it late, and passes the dial gate within SEND_SHARE of it (the
# gate's round trip is the rest); what is left is for the request's send.
WAKE_SHARE = 0.5
SEND_SHARE = 0.75
# Ask for more while the slots held end within this and more calls wait than slots are
# held, so the next grant's round trip overlaps the dialing instead of pausing it.
PREFETCH = 0.25  # seconds
RETRY_FLOOR_SECONDS = 0.005  # shortest wait before asking again after an empty grant
DB_RETRY_SECONDS = 1.0  # wait before asking again after a database error
# Where the database's clock stands on ours is taken from the grant with the shortest
# round trip; an older estimate is trusted less by this much per second (clocks drift
# apart by far less than a millisecond per second).
DRIFT_PER_SECOND = 1e-3
MIN_WAIT_SECONDS = 1e-6  # a wait this short counts as done (float remainders)
# A call is let through this much before its slot, to pass the dial gate meanwhile and
# then wait for the slot itself (`settle`): what the gate's round trip rarely exceeds,
# estimated as TCP estimates its retransmission timeout (mean + 4 x mean deviation,
# RFC 6298), never more than MAX_LEAD_SECONDS. Without it every call would reach its
# slot late by the gate's round trip, which at high rates is the whole allowance; with
# a mean alone, every gate slower than the mean cost its slot (measured at 100/s: one
# call in twenty). The cap keeps the gate right before the request (a pause is obeyed
# by the calls after the next few).
MAX_LEAD_SECONDS = 0.05
GATE_SMOOTHING = 1 / 8  # weight of the newest gate time in the running mean
GATE_DEVIATION_SMOOTHING = 1 / 4  # and in the running mean deviation
GATE_DEVIATIONS = 4  # deviations added to the mean


@dataclass(frozen=True)
class Slot:
    """A call's dial slot, on this instance's monotonic clock: the request leaves at
    `at` (not before), and not after `send_by` (docs/invariants.md#9)."""

    at: float
    send_by: float


class SlotSource(Protocol):
    """The database side (store/pacing.py): up to `want` free slots of the grid."""

    async def take_dial_slots(
        self, campaign_id: uuid.UUID | None, want: int, *, rate: float, horizon: float, live_within: float
    ) -> DialSlots: ...


def lateness_allowed(rate: float, bucket_size: int, cap: float | None = None) -> float:
    """How late (seconds) a dial may be against its slot while no one-second window
    holds more than floor(rate + bucket_size) dials (docs/invariants.md#9).

    Slots are 1/rate apart, so dials late by at most d put at most ceil(rate * (1 + d))
    in a window; that is within floor(rate) + bucket_size while d <= (bucket_size -
    frac(rate)) / rate. A capped campaign's slots may sit up to one account interval
    before its own schedule, which that interval takes from its allowance; for a cap
    above half the account's rate this would leave almost nothing, so such a cap keeps
    half an interval of its own (its window may then, rarely, hold one call more)."""
    allowed = (bucket_size - rate % 1) / rate
    if cap is not None:
        own = (bucket_size - cap % 1) / cap - 1 / rate
        allowed = min(allowed, max(own, 0.5 / cap))
    return allowed


@dataclass
class _Scope:
    """The slots this instance holds for the account (key None) or one capped campaign,
    and the calls waiting for one, in arrival order."""

    # (at, let through by, sent by), ascending
    slots: deque[tuple[float, float, float]] = field(default_factory=deque)
    waiters: deque[asyncio.Future[Slot]] = field(default_factory=deque)
    dispatcher: asyncio.Task[None] | None = None  # lets waiters through while any wait
    refill: asyncio.Task[None] | None = None  # the grant in flight, if any
    cap: float | None = None  # the campaign's own rate, as of the last grant


@dataclass
class _Offset:
    """The database's clock minus ours, from one grant, and how sure it is."""

    seconds: float
    error: float  # half the grant's round trip: the estimate is within this
    taken: float  # our clock when measured


class SharedPacer:
    """Lets calls dial at this instance's part of the account's rate: `acquire()`
    before each call's dial gate and carrier request. The scheduler sizes its claims
    with `available_within()`."""

    def __init__(
        self,
        source: SlotSource,
        *,
        rate: float,
        bucket_size: int,
        instance_timeout_seconds: float,
        metrics: Metrics | None = None,
        horizon: float = HORIZON_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or bucket_size < 1:
            raise ValueError("rate must be > 0 and bucket_size >= 1")
        self.configured_rate = rate
        self.bucket_size = bucket_size
        self.horizon = horizon
        self._source = source
        self._live_within = instance_timeout_seconds
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._scopes: dict[uuid.UUID | None, _Scope] = {}
        self._offset: _Offset | None = None
        # As of the last grant: the account's rate in force and the live instances.
        self.account_rate = rate
        self.live = 1
        self.grants = 0  # statements spent on slots
        self.dials = 0  # calls let through
        self.dropped = 0  # slots let go: the call that would have used it woke too late
        self.sent_late = 0  # calls sent late on their second slot (a slow database)
        self._rate_mark = (clock(), 0)
        self._gate_seconds = 0.0  # running mean of the dial gate's round trip
        self._gate_deviation = 0.0  # and its running mean deviation

    @property
    def rate(self) -> float:
        """Dials per second this instance can count on now: its share of the account's rate."""
        return self.account_rate / self.live

    @property
    def lead(self) -> float:
        """How long before its slot a call is let through: time for the dial gate."""
        return min(MAX_LEAD_SECONDS, self._gate_seconds + GATE_DEVIATIONS * self._gate_deviation)

    def gate_took(self, seconds: float) -> None:
        """The dial gate's round trip, measured by the pool (sizes the lead)."""
        deviation = abs(seconds - self._gate_seconds)
        self._gate_deviation += GATE_DEVIATION_SMOOTHING * (deviation - self._gate_deviation)
        self._gate_seconds += GATE_SMOOTHING * (seconds - self._gate_seconds)

    async def acquire(self, campaign_id: uuid.UUID | None = None) -> Slot:
        """Wait for this call's slot: of the account, or of `campaign_id` when that
        campaign has a calls_per_second of its own. Returns up to `lead` before the
        slot; pass the dial gate, then `settle()` before the request."""
        scope = self._scopes.setdefault(campaign_id, _Scope())
        turn: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        scope.waiters.append(turn)
        if scope.dispatcher is None:
            scope.dispatcher = asyncio.create_task(
                self._dispatch(scope, campaign_id), name=f"dial-slots-{campaign_id or 'account'}"
            )
        try:
            slot = await turn
        except asyncio.CancelledError:
            if turn in scope.waiters:  # its slot never came: nothing to give back
                scope.waiters.remove(turn)
            raise
        self.dials += 1
        return slot

    async def settle(self, slot: Slot, *, last_try: bool = False) -> bool:
        """Wait for the slot's moment, right before the request. False when it is too
        late to send on it (the dial gate outlasted it: a slow or stalled database; or
        this wait woke late): sent anyway, it could bunch with other dials, so the
        call must take a new slot — unless this is its `last_try`, when it is sent
        late (counted in `sent_late`)."""
        wait = slot.at - self._clock()
        if wait > MIN_WAIT_SECONDS:
            await self._sleep(wait)
        if self._clock() <= slot.send_by:
            return True
        if last_try:
            self.sent_late += 1
            return False
        self.dials -= 1  # it counts when it is let through again
        self.dropped += 1
        if self._metrics is not None:
            self._metrics.dial_slots_dropped.inc()
        return False

    async def close(self) -> None:
        """Stop the dispatchers and grants still running (the daemon is closing)."""
        tasks = [t for s in self._scopes.values() for t in (s.dispatcher, s.refill) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _dispatch(self, scope: _Scope, campaign_id: uuid.UUID | None) -> None:
        """While calls wait: at each slot, let through every waiting call whose slot
        has come (oldest first), after letting go of the slots too old to use."""
        try:
            while scope.waiters:
                now = self._clock()
                while scope.slots and scope.slots[0][1] < now:
                    scope.slots.popleft()  # too late to let a call through: it could bunch with others
                    self.dropped += 1
                    if self._metrics is not None:
                        self._metrics.dial_slots_dropped.inc()
                lead = self.lead
                while scope.waiters and scope.slots and scope.slots[0][0] - lead <= now + MIN_WAIT_SECONDS:
                    waiter = scope.waiters.popleft()
                    if not waiter.done():  # else cancelled meanwhile: the slot stays for the next
                        at, _, send_by = scope.slots.popleft()
                        waiter.set_result(Slot(at, send_by))
                if not scope.waiters:
                    break
                self._prefetch(scope, campaign_id, now)
                if scope.slots:
                    await self._sleep(scope.slots[0][0] - lead - now)
                elif scope.refill is not None:
                    # Shielded: a dispatcher cancelled at close leaves the grant's own end to close().
                    await asyncio.shield(scope.refill)
        except Exception as exc:
            # A bug, not the database (the grant handles that): the calls waiting must
            # not wait forever; each fails, is logged, and its claim is rescued.
            log.exception("dial_slots_dispatch_failed")
            while scope.waiters:
                waiter = scope.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(exc)
        finally:
            scope.dispatcher = None
            if not scope.slots and scope.refill is None and campaign_id is not None:
                self._scopes.pop(campaign_id, None)  # a campaign that stopped dialing holds nothing

    def _fair_share(self, scope: _Scope) -> int:
        """Slots this instance may hold in the scope at once: an equal part of what the
        horizon holds (the database caps each grant the same way; this keeps a grant
        asked for early from adding to one still held)."""
        if scope.cap is None:
            return max(1, math.ceil(self.account_rate * self.horizon / self.live))
        # A capped campaign may use only one or two slots of every 1/cap seconds, and
        # the account's scopes take the earliest free slot each time they dial: asked
        # for only once its slot was used, a capped campaign's next slot would keep
        # going to them (seen: one dial every three account intervals where one every
        # two was due). So it also holds its next one, asked for as soon as it may.
        return max(1, math.ceil(min(scope.cap, self.account_rate) * self.horizon / self.live)) + 1

    def _prefetch(self, scope: _Scope, campaign_id: uuid.UUID | None, now: float) -> None:
        """Start a grant for this scope unless one is in flight or the slots held
        last: it runs when none is held, or when fewer are held than calls wait, fewer
        than its fair share, and the last of them is near (for a capped campaign, at
        once: its next slot is one of few)."""
        if scope.refill is not None:
            return
        held = len(scope.slots)
        enough = len(scope.waiters) <= held or held >= self._fair_share(scope)
        if held and (enough or (scope.cap is None and scope.slots[-1][0] >= now + PREFETCH)):
            return
        scope.refill = asyncio.create_task(
            self._refill(scope, campaign_id), name=f"dial-slot-grant-{campaign_id or 'account'}"
        )

    async def _refill(self, scope: _Scope, campaign_id: uuid.UUID | None) -> None:
        """One grant for the calls waiting in this scope beyond the slots it holds;
        waits when none came. The scope's task: never two at once."""
        try:
            await self._grant(scope, campaign_id)
        except DatabaseUnavailable as exc:
            log.warning("dial_slots_failed", error=str(exc))
            await self._sleep(DB_RETRY_SECONDS)
        finally:
            scope.refill = None

    async def _grant(self, scope: _Scope, campaign_id: uuid.UUID | None) -> None:
        # Calls claimed together start together: let the rest of them register first,
        # so that one grant serves them all.
        await asyncio.sleep(0)
        sent = self._clock()
        held = len(scope.slots)
        want = max(1, min(len(scope.waiters), self._fair_share(scope)) - held)
        grant = await self._source.take_dial_slots(
            campaign_id, want, rate=self.configured_rate, horizon=self.horizon, live_within=self._live_within
        )
        received = self._clock()
        self.grants += 1
        offset = self._estimate_offset(grant.db_now, sent, received)
        self.account_rate, self.live, scope.cap = grant.rate, grant.live, grant.campaign_rate
        if self._metrics is not None:
            self._metrics.dial_slot_grants.inc()
            self._metrics.dial_rate_share.set(self.rate)
        allowed = lateness_allowed(grant.rate, self.bucket_size, grant.campaign_rate)
        wake, send = WAKE_SHARE * allowed, SEND_SHARE * allowed
        moments = [grant.db_now + later - offset for later in grant.offsets]
        # Free slots may lie between those held (another instance's grant ended, or a
        # capped campaign skipped them): kept in order.
        scope.slots = deque(sorted([*scope.slots, *((at, at + wake, at + send) for at in moments)]))
        if not grant.offsets:
            await self._sleep(min(self.horizon, max(RETRY_FLOOR_SECONDS, grant.retry_after)))

    def _estimate_offset(self, db_now: float, sent: float, received: float) -> float:
        """The database's clock minus ours. The database read its clock somewhere
        between `sent` and `received`; the grant with the shortest round trip says
        best where (a slow one, a loaded loop's late wake-up included, would place
        every slot of the batch late by the delay). Slots are on the database's
        clock, so hosts whose clocks disagree still share one grid."""
        sample = _Offset(db_now - (sent + received) / 2, (received - sent) / 2, received)
        best = self._offset
        if best is None or sample.error <= best.error + DRIFT_PER_SECOND * (received - best.taken):
            self._offset = best = sample
        return best.seconds

    def available_within(
        self, seconds: float, campaign_id: uuid.UUID | None = None, cap: float | None = None
    ) -> int:
        """How many more calls to claim: those this instance can expect to dial within
        `seconds`, and one more, less those already waiting for a slot (of the
        account, or of a campaign with its own `cap`). The one more is waiting when
        the next slot comes even if the next claim is late (a loaded machine, a low
        share); and while none waits, work always moves."""
        if campaign_id is None:
            rate = self.rate
            waiting = sum(len(s.waiters) for s in self._scopes.values())
        else:
            rate = min(cap or self.account_rate, self.account_rate) / self.live
            scope = self._scopes.get(campaign_id)
            waiting = len(scope.waiters) if scope is not None else 0
        return max(0, math.ceil(seconds * rate) + 1 - waiting)

    def dial_rate(self) -> float:
        """Dials per second since the last call of this method (the heartbeat
        records it in dialer_instances.dial_rate)."""
        now = self._clock()
        since, dials = self._rate_mark
        self._rate_mark = (now, self.dials)
        return (self.dials - dials) / (now - since) if now > since else 0.0
