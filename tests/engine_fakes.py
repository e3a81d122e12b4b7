"""In-memory stand-ins for unit tests of the scheduler and the call pool: a store that
satisfies `SchedulerStore` and `PoolStore` over a dict of calls, and a carrier that
answers at once or holds a request until the test lets it go; and the account's grid of
dial slots held in memory (`MemoryGrid`, for the pacer). They record what the
engine asked of them, so a test can pin how many calls a pass claimed and from whom.

Only the engine's side is faked here; what the real store does with each request is
pinned against PostgreSQL in tests/integration/."""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from dialer.carrier import FINAL_TWILIO_STATUSES, CarrierCall, DialRequest
from dialer.errors import CarrierError, DatabaseUnavailable
from dialer.models import (
    ApplyResult,
    CallEvent,
    CallStatus,
    Campaign,
    CampaignStatus,
    ClaimedCall,
    Contact,
    DialIntent,
    DialSlots,
)
from dialer.store.claims import DueCounts
from dialer.store.live import CallEnding, LiveCall

NOW = datetime(2026, 11, 25, 12, 0)
LIVE = (CallStatus.PENDING, CallStatus.IN_PROGRESS)


def make_campaign(name: str) -> Campaign:
    """An active campaign with no calling hours (always open) and the schema's defaults."""
    return Campaign(
        id=uuid.uuid4(), name=name, status=CampaignStatus.ACTIVE, script_template=None, caller_id="+34910000000",
        timezone=None, schedule_start=None, schedule_end=None, calling_hours_start=None, calling_hours_end=None,
        calling_days=None, max_retries=2, retry_delay_minutes=30, max_concurrent_calls=None,
        machine_detection=False, machine_is_failure=False, record_calls=False, ring_timeout_seconds=30,
        time_limit_seconds=600, last_error=None,
    )


@dataclass
class FakeCall:
    """One calls row."""

    claimed: ClaimedCall
    status: CallStatus = CallStatus.SCHEDULED
    call_sid: str | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class Claim:
    """One `claim` the engine asked for: how many it wanted and how many it got."""

    campaign_id: uuid.UUID
    asked: int
    got: int


@dataclass
class FakeStore:
    """The engine's store in memory. Campaigns are always dialable and open; due calls
    are claimed in order; what a real store decides in SQL (retries, dispositions) is
    reduced to the call's status, which is all the engine reads back."""

    now: datetime = NOW
    campaigns: list[Campaign] = field(default_factory=list)
    calls: dict[uuid.UUID, FakeCall] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    endings_reads: list[list[uuid.UUID]] = field(default_factory=list)
    released: list[uuid.UUID] = field(default_factory=list)
    accepted: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    failed: list[tuple[uuid.UUID, DialIntent]] = field(default_factory=list)
    events: list[tuple[uuid.UUID | None, CallEvent]] = field(default_factory=list)
    # While set and clear, begin_dial waits on it: a claimed call stands before the gate.
    gate: asyncio.Event | None = None
    at_gate: int = 0  # calls that reached begin_dial
    gates: list[tuple[uuid.UUID, bool]] = field(default_factory=list)  # (call, again) asked
    # Campaigns whose gate is shut (paused, cancelled) when the gate reads them.
    shut: set[uuid.UUID] = field(default_factory=set)
    # call_endings raises DatabaseUnavailable this many more times.
    endings_failures: int = 0
    _due: dict[uuid.UUID, deque[uuid.UUID]] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def clock(self) -> Callable[[], datetime]:
        """The store's clock: `now`, moved only by the test."""
        return lambda: self.now

    # -- set-up and the test's hand on the rows ----------------------------------

    def add_campaign(self, name: str, due: int) -> Campaign:
        """An active campaign with `due` calls due now."""
        campaign = make_campaign(name)
        self.campaigns.append(campaign)
        self._due[campaign.id] = deque()
        for _ in range(due):
            number = f"+3491{next(self._numbers):07d}"
            claimed = ClaimedCall(
                id=uuid.uuid4(), campaign_id=campaign.id, contact_id=uuid.uuid4(), retry_count=0,
                contact=Contact(first_name=None, last_name=None, phone_number=number, email=None),
                from_number=campaign.caller_id or "", script_template=None, machine_detection=False,
                record_calls=False, ring_timeout_seconds=30, time_limit_seconds=600,
            )
            self.calls[claimed.id] = FakeCall(claimed)
            self._due[campaign.id].append(claimed.id)
        return campaign

    def finish(self, call_id: uuid.UUID, status: CallStatus = CallStatus.COMPLETED) -> None:
        """The call's row becomes final, as a callback applied on any instance leaves it."""
        self.calls[call_id].status = status
        self.calls[call_id].outcome = status.value

    def claimed_by(self, campaign: Campaign) -> int:
        """How many calls of the campaign were claimed so far."""
        return sum(c.got for c in self.claims if c.campaign_id == campaign.id)

    def live_ids(self) -> list[uuid.UUID]:
        """The calls whose rows are live (claimed and not final)."""
        return [i for i, c in self.calls.items() if c.status in LIVE]

    # -- SchedulerStore ----------------------------------------------------------

    async def heartbeat(self, dial_rate: float = 0.0, rate_share: float | None = None) -> None:
        """Nothing to record."""

    async def adopt_orphans(self, instance_timeout_seconds: float) -> list[LiveCall]:
        """No other instance here."""
        return []

    async def my_live_calls(self) -> list[LiveCall]:
        """The live rows (all of them are this instance's)."""
        return [self._live(c) for c in self.calls.values() if c.status in LIVE]

    async def housekeep(self) -> bool:
        """Nothing to activate or complete."""
        return False

    async def dialable_campaigns(self) -> list[Campaign]:
        """Every campaign."""
        return list(self.campaigns)

    async def claim(self, campaign: Campaign, limit: int) -> list[ClaimedCall]:
        """Up to `limit` due calls of the campaign, oldest first, now pending."""
        due = self._due[campaign.id]
        got: list[ClaimedCall] = []
        while due and len(got) < limit:
            call = self.calls[due.popleft()]
            call.status = CallStatus.PENDING
            got.append(call.claimed)
        self.claims.append(Claim(campaign.id, limit, len(got)))
        return got

    async def campaign_zones(self, campaign: Campaign) -> list[str]:
        """No zones known: the claim decides."""
        return []

    async def any_zone_open(self, campaign: Campaign, zones: Sequence[str]) -> bool:
        """Always open."""
        return True

    async def due_counts(self, campaign_ids: Sequence[uuid.UUID], cap: int = 100_000) -> DueCounts:
        """Due calls of these campaigns, all dialable (the fake has no calling hours)."""
        return DueCounts(dialable=min(cap, sum(len(self._due[i]) for i in campaign_ids)), held=0)

    async def next_due_at(self, campaign_ids: Sequence[uuid.UUID]) -> datetime | None:
        """No retries scheduled for later."""
        return None

    # -- PoolStore ----------------------------------------------------------------

    async def begin_dial(self, call_id: uuid.UUID, again: bool = False) -> bool:
        """The gate: open (after `gate`, when the test holds it)."""
        self.at_gate += 1
        self.gates.append((call_id, again))
        # The campaign's status as of the gate's start (a snapshot), as in SQL.
        shut = self.calls[call_id].claimed.campaign_id in self.shut
        if self.gate is not None:
            await self.gate.wait()
        return self.calls[call_id].status is CallStatus.PENDING and not shut

    async def release_claim(self, call_id: uuid.UUID) -> None:
        """Back to scheduled, first in line."""
        call = self.calls[call_id]
        call.status = CallStatus.SCHEDULED
        self._due[call.claimed.campaign_id].appendleft(call_id)
        self.released.append(call_id)

    async def dial_accepted(self, call_id: uuid.UUID, call_sid: str) -> bool:
        """Store the sid: the call is in progress."""
        call = self.calls[call_id]
        if call.call_sid is not None:
            return False
        call.call_sid = call_sid
        if call.status is CallStatus.PENDING:
            call.status = CallStatus.IN_PROGRESS
        self.accepted.append((call_id, call_sid))
        return True

    async def dial_failed(
        self,
        call_id: uuid.UUID,
        intent: DialIntent,
        *,
        code: int | None = None,
        status: int | None = None,
        message: str = "",
    ) -> CallStatus:
        """A requeue goes back to scheduled; anything else fails the call."""
        self.failed.append((call_id, intent))
        call = self.calls[call_id]
        call.status = CallStatus.SCHEDULED if intent is DialIntent.REQUEUE else CallStatus.FAILED
        return call.status

    async def adopted_sids(self, sids: Sequence[str]) -> set[str]:
        """Which of these sids a call holds."""
        held = {c.call_sid for c in self.calls.values()}
        return {s for s in sids if s in held}

    async def apply_call_event(self, call_id: uuid.UUID | None, event: CallEvent) -> ApplyResult:
        """A final event ends the call; others change nothing worth recording."""
        self.events.append((call_id, event))
        if call_id is None or call_id not in self.calls:
            return ApplyResult.UNKNOWN
        call = self.calls[call_id]
        if call.status.is_final:
            return ApplyResult.IGNORED
        if event.status in FINAL_TWILIO_STATUSES:
            self.finish(call_id, CallStatus.COMPLETED if event.status == "completed" else CallStatus.FAILED)
        return ApplyResult.APPLIED

    async def call_statuses(self, call_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CallStatus]:
        """The status of each known call."""
        return {i: self.calls[i].status for i in call_ids if i in self.calls}

    async def call_endings(self, call_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CallEnding]:
        """Status, outcome and response of each known call (recorded; may be told to fail)."""
        self.endings_reads.append(list(call_ids))
        if self.endings_failures > 0:
            self.endings_failures -= 1
            raise DatabaseUnavailable("connection lost")
        return {
            i: CallEnding(self.calls[i].status, self.calls[i].outcome, None) for i in call_ids if i in self.calls
        }

    async def live_call(self, call_id: uuid.UUID) -> LiveCall | None:
        """The call as a live call, or None once final."""
        call = self.calls.get(call_id)
        return self._live(call) if call is not None and call.status in LIVE else None

    def _live(self, call: FakeCall) -> LiveCall:
        c = call.claimed
        return LiveCall(
            id=c.id, campaign_id=c.campaign_id, status=call.status, call_sid=call.call_sid, dialed_at=self.now,
            phone_number=c.contact.phone_number, from_number=c.from_number,
            ring_timeout_seconds=c.ring_timeout_seconds, time_limit_seconds=c.time_limit_seconds,
        )


class MemoryGrid:
    """The account's grid as sql/0016 keeps it, for one rate and no campaign caps: slot
    k at k / rate, each granted once, never further than the horizon ahead."""

    def __init__(self, clock: Callable[[], float], rate: float, live: int = 1) -> None:
        self.clock = clock
        self.rate = rate
        self.live = live
        self.next_k = 0
        self.calls = 0
        self.failures = 0  # how many of the next calls raise DatabaseUnavailable

    async def take_dial_slots(
        self, campaign_id: uuid.UUID | None, want: int, *, rate: float, horizon: float, live_within: float
    ) -> DialSlots:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise DatabaseUnavailable("connection refused")
        now = self.clock()
        first = max(self.next_k, math.ceil(now * self.rate))
        last = math.floor((now + horizon + self.live / self.rate) * self.rate)
        want = min(want, max(1, math.ceil(self.rate * horizon / self.live)))
        ks = list(range(first, min(last + 1, first + want)))
        if ks:
            self.next_k = ks[-1] + 1
        retry = 0.0 if ks else max(0.0, first / self.rate - horizon - self.live / self.rate - now)
        return DialSlots(now, [k / self.rate - now for k in ks], self.rate, None, self.live, retry)


@dataclass
class FakeCarrier:
    """A carrier that accepts every request at once, or holds each request until
    `release` is set; `error` makes every request fail with it instead."""

    dials: list[DialRequest] = field(default_factory=list)
    release: asyncio.Event | None = None
    error: CarrierError | None = None
    _sids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def dial(self, request: DialRequest) -> CarrierCall:
        """Record the request; answer with a new sid (or the error)."""
        self.dials.append(request)
        if self.release is not None:
            await self.release.wait()
        if self.error is not None:
            raise self.error
        return CarrierCall(sid=f"CA{next(self._sids):032x}", status="queued", to=request.to, from_=request.from_)

    async def fetch(self, sid: str) -> CarrierCall:
        """The call is still ringing."""
        return CarrierCall(sid=sid, status="ringing", to="", from_="")

    async def find(self, to: str, since: datetime) -> list[CarrierCall]:
        """No call found."""
        return []

    async def hangup(self, sid: str) -> None:
        """Nothing to hang up."""

    async def close(self) -> None:
        """Nothing to close."""


def request_for(call: ClaimedCall) -> DialRequest:
    """The dial request of a claimed call (what service.py's builder makes, minus TwiML)."""
    return DialRequest(
        to=call.contact.phone_number, from_=call.from_number, status_callback_url="http://127.0.0.1/twilio/status"
    )
