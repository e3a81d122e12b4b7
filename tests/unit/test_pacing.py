"""The instance's side of the shared dial rate (dialer/pacing.py), against a grid held in
memory in place of the database's and a simulated clock whose sleeps wake late, as an
event loop under load does: the rate holds, no one-second window exceeds rate +
bucket_size, late slots are let go, and claims are sized by what is waiting."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest

from dialer.models import DialSlots
from dialer.pacing import MAX_LEAD_SECONDS, SEND_SHARE, WAKE_SHARE, SharedPacer, lateness_allowed
from tests.engine_fakes import MemoryGrid
from tests.invariants import worst_window


class LateClock:
    """A clock that only moves when someone sleeps, by the time asked plus slack."""

    def __init__(self, max_slack: float, seed: int = 3) -> None:
        self.now = 1000.0
        self.max_slack = max_slack
        self.rng = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # what was let through runs at the moment it was let through
        self.now += max(0.0, seconds) + self.rng.uniform(0, self.max_slack)

    def work(self, seconds: float) -> None:
        """Time spent by the caller between grants (it never sleeps, the loop is busy)."""
        self.now += seconds


def _pacer(grid: MemoryGrid, clock: LateClock, bucket_size: int = 1) -> SharedPacer:
    return SharedPacer(
        grid, rate=grid.rate, bucket_size=bucket_size, instance_timeout_seconds=30, clock=clock, sleep=clock.sleep
    )


async def _grants(pacer: SharedPacer, clock: LateClock, n: int, work: float = 0.0) -> list[float]:
    times = []
    for _ in range(n):
        await pacer.acquire()
        times.append(clock())
        clock.work(clock.rng.uniform(0, work))
    return times


@pytest.mark.parametrize(("rate", "bucket_size", "slack"), [(100.0, 1, 0.004), (10.0, 1, 0.03), (100.0, 5, 0.006)])
async def test_rate_holds_and_no_window_exceeds_rate_plus_bucket(rate: float, bucket_size: int, slack: float) -> None:
    """Wake-ups late by up to `slack`: the observed rate stays within 2 % and the
    worst one-second window within rate + bucket_size."""
    clock = LateClock(slack)
    grid = MemoryGrid(clock, rate)
    pacer = _pacer(grid, clock, bucket_size)
    times = await _grants(pacer, clock, int(rate * 30), work=slack / 2)
    observed = (len(times) - 1) / (times[-1] - times[0])
    assert abs(observed - rate) / rate <= 0.02, observed
    assert worst_window(times) <= rate + bucket_size


async def test_a_slot_woken_too_late_for_is_let_go() -> None:
    """A call woken later than the grace after its slot does not dial on it (two dials
    would then sit closer than the grid allows): it takes the next slot instead."""
    clock = LateClock(0.0)
    grid = MemoryGrid(clock, 10.0)
    pacer = _pacer(grid, clock)
    late = 0.1 + WAKE_SHARE * lateness_allowed(10.0, 1) + 0.001  # past the second slot's grace
    slacks = iter([late])

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)
        clock.now += max(0.0, seconds) + next(slacks, 0.0)

    pacer._sleep = sleep
    times: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        times.append(clock())

    await asyncio.gather(one(), one())
    assert grid.calls == 2  # one grant of two slots, then one for the slot let go
    assert pacer.dropped == 1
    assert times[1] - times[0] >= 0.2 - 1e-9  # the third slot, not the second


async def test_a_late_wake_lets_through_at_once_every_call_still_within_its_grace() -> None:
    """At 100/s with bucket_size 10 (grace 50 ms), a wake 30 ms late lets the calls of
    the slots it overslept through together instead of one per wake; none older than
    the grace."""
    clock = LateClock(0.0)
    grid = MemoryGrid(clock, 100.0)
    pacer = _pacer(grid, clock, bucket_size=10)
    slacks = iter([0.0, 0.03])

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)
        clock.now += max(0.0, seconds) + next(slacks, 0.0)

    pacer._sleep = sleep
    times: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        times.append(clock())

    await asyncio.gather(*(one() for _ in range(8)))
    assert pacer.dropped == 0
    assert times.count(times[2]) >= 3  # slots 3, 4 and 5 went together, 30 ms late at most
    assert max(t - (1000.0 + i * 0.01) for i, t in enumerate(times)) <= 0.03 + 1e-9


async def test_a_call_cancelled_while_waiting_leaves_its_slot_to_the_next() -> None:
    """A waiting call cancelled (its campaign paused, the daemon closing) takes no slot."""
    clock = LateClock(0.0)
    grid = MemoryGrid(clock, 10.0)
    pacer = _pacer(grid, clock)
    first = asyncio.create_task(pacer.acquire())
    second = asyncio.create_task(pacer.acquire())
    await asyncio.sleep(0)
    second.cancel()
    await first
    assert second.cancelled()
    await pacer.acquire()
    assert clock() == pytest.approx(1000.1)  # the second slot, which the cancelled call did not take
    assert pacer.dials == 2 and pacer.dropped == 0
    await pacer.close()


async def test_a_call_held_up_past_its_slot_is_late_and_takes_a_new_one() -> None:
    """settle(): a call whose dial gate outlasted its slot's send-by is late (the slot
    counts as let go, not dialed); on time it is not, and it waits for the slot."""
    clock = LateClock(0.0)
    grid = MemoryGrid(clock, 10.0)
    pacer = _pacer(grid, clock)
    slot = await pacer.acquire()
    assert await pacer.settle(slot)
    slot = await pacer.acquire()
    clock.work(slot.send_by - clock() + 0.001)
    assert not await pacer.settle(slot)
    assert (pacer.dials, pacer.dropped) == (1, 1)
    await pacer.acquire()
    assert pacer.dials == 2
    assert SEND_SHARE * lateness_allowed(10.0, 1) == pytest.approx(slot.send_by - slot.at)


async def test_calls_are_let_through_ahead_by_the_gate_time_and_settle_on_the_slot() -> None:
    """With the dial gate steady at 8 ms, a call is let through 8 ms before its slot
    and settle() returns at the slot itself; a gate that varies (4 or 12 ms) is given
    its mean and four mean deviations (24 ms), as TCP sizes a retransmission timeout,
    so a gate slower than the mean still settles on its slot; the lead never exceeds
    MAX_LEAD_SECONDS however slow the gate."""
    clock = LateClock(0.0)
    grid = MemoryGrid(clock, 10.0)
    pacer = _pacer(grid, clock)
    first = await pacer.acquire()
    assert await pacer.settle(first)
    for _ in range(200):
        pacer.gate_took(0.008)
    assert pacer.lead == pytest.approx(0.008, abs=1e-4)
    slot = await pacer.acquire()
    assert clock() == pytest.approx(slot.at - pacer.lead, abs=1e-6)
    assert await pacer.settle(slot)
    assert clock() == pytest.approx(slot.at, abs=1e-6)
    for i in range(200):
        pacer.gate_took(0.004 if i % 2 else 0.012)
    assert pacer.lead == pytest.approx(0.024, abs=0.002)
    for _ in range(50):
        pacer.gate_took(10.0)
    assert pacer.lead == MAX_LEAD_SECONDS


async def test_concurrent_waiters_are_served_in_order() -> None:
    """Real asyncio and clock: waiters finish in arrival order, and one grant serves
    the calls that started together."""
    grid = MemoryGrid(time.monotonic, 200.0)
    pacer = SharedPacer(grid, rate=200.0, bucket_size=10, instance_timeout_seconds=30)
    order: list[int] = []

    async def one(i: int) -> None:
        await pacer.acquire()
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(20)))
    assert order == list(range(20))
    assert grid.calls == 1


async def test_claims_are_sized_by_the_share_less_what_waits() -> None:
    """available_within: this instance's share of the account's rate over the
    horizon and one more, less the calls already waiting for a slot; a capped
    campaign by its cap."""
    clock = LateClock(0.0)
    grid = MemoryGrid(clock, 30.0, live=3)
    pacer = _pacer(grid, clock)
    await pacer.acquire()  # learns the live instances from the grant
    assert pacer.rate == 10.0
    assert pacer.available_within(1.0) == 11
    waiter = asyncio.create_task(pacer.acquire())
    await asyncio.sleep(0)
    assert pacer.available_within(1.0) == 10
    campaign = uuid.uuid4()
    assert pacer.available_within(1.0, campaign, cap=6.0) == 3
    clock.work(1.0)
    await waiter


async def test_a_database_error_waits_and_asks_again() -> None:
    """The grid cannot be reached: the call waits and asks again; it never dials without a slot."""
    clock = LateClock(0.0)
    grid = MemoryGrid(clock, 10.0)
    grid.failures = 2
    pacer = _pacer(grid, clock)
    await pacer.acquire()
    assert grid.calls == 3
    assert clock() >= 1000.0 + 2.0


class SlowGrid(MemoryGrid):
    """Grants whose replies take `delay` to be heard, as on a loaded loop; the
    database read its clock at the start."""

    def __init__(self, clock: LateClock, rate: float) -> None:
        super().__init__(clock, rate)
        self.delays = [0.0, 0.0, 0.08]

    async def take_dial_slots(
        self, campaign_id: uuid.UUID | None, want: int, *, rate: float, horizon: float, live_within: float
    ) -> DialSlots:
        grant = await super().take_dial_slots(campaign_id, want, rate=rate, horizon=horizon, live_within=live_within)
        assert isinstance(self.clock, LateClock)
        self.clock.work(self.delays.pop(0) if self.delays else 0.0)
        return grant


async def test_a_slow_reply_does_not_move_the_slots_later() -> None:
    """The database's clock is placed on ours by the grant with the shortest round
    trip: a reply heard 80 ms late still puts its slots where the database meant."""
    clock = LateClock(0.0)
    grid = SlowGrid(clock, 10.0)
    pacer = _pacer(grid, clock)
    for _ in range(2):
        await pacer.acquire()
    await pacer.acquire()  # the third grant's reply comes 80 ms after the database's now
    assert clock() == pytest.approx((grid.next_k - 1) / 10.0)  # its slot, not 80 ms after it


def test_lateness_allowed_keeps_the_window_bound() -> None:
    """Integer rates may be a whole interval late per unit of bucket_size; a fractional
    rate less; a capped campaign gives up one account interval, and a cap above half
    the account's rate keeps half an interval of its own."""
    assert lateness_allowed(4.0, 1) == pytest.approx(0.25)
    assert lateness_allowed(4.0, 2) == pytest.approx(0.5)
    assert lateness_allowed(2.5, 1) == pytest.approx(0.2)
    assert lateness_allowed(20.0, 1, cap=4.0) == pytest.approx(0.05)  # min(1/20, 1/4 - 1/20)
    assert lateness_allowed(100.0, 1, cap=4.0) == pytest.approx(0.01)
    assert lateness_allowed(100.0, 1, cap=80.0) == pytest.approx(0.00625)  # the cap's own half interval
