"""The scheduler against an in-memory store and carrier (tests/engine_fakes.py), with
the real call pool and pacer (on an in-memory grid): how one pass shares its budget
between campaigns, that a pass never claims more than the free slots or the pacer allow, and
that slots freed one by one are claimed by one pass. No database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from dialer import scheduler as scheduler_module
from dialer.metrics import Metrics
from dialer.pacing import SharedPacer
from dialer.pool import CallPool
from dialer.scheduler import Scheduler
from tests.engine_fakes import Claim, FakeCarrier, FakeStore, MemoryGrid, request_for
from tests.harness import wait_for

POLL = 0.005  # seconds between polls: everything here is in memory


class FakeClock:
    """A monotonic clock that moves only when told (for the pacer)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Engine:
    """A scheduler, its pool and the fakes they run against."""

    store: FakeStore
    pool: CallPool
    scheduler: Scheduler
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def end(self, call_ids: list[uuid.UUID]) -> None:
        """End these calls as a callback would (row final, then NOTIFY) and wait for
        their coroutines to let go of their slots."""
        for call_id in call_ids:
            self.store.finish(call_id)
            self.pool.on_call_notification(f"{call_id}:completed:completed")

        async def gone() -> bool:
            return not any(self.pool.holds(i) for i in call_ids)

        await wait_for(gone, 5, "the ended calls to free their slots", interval=POLL)

    async def live(self, n: int) -> None:
        """Wait until the pool holds n calls, all placed at the carrier."""

        async def placed() -> bool:
            # Placed: a sid stored, not just claimed (a claimed call may still wait
            # for its dial slot, docs/architecture.md#pacing).
            live = self.store.live_ids()
            return len(self.pool) == n and len(live) == n and all(self.store.calls[i].call_sid for i in live)

        await wait_for(placed, 5, f"{n} live calls", interval=POLL)

    def run(self) -> asyncio.Event:
        """Run the scheduler's loop in the background until the returned event is set."""
        stop = asyncio.Event()
        self.tasks.append(asyncio.create_task(self.scheduler.run(stop)))
        return stop


Build = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    """Build engines (pool of `slots`, the given pacer, a long tick so that only
    wakes drive the loop); every loop and call coroutine is stopped afterwards."""
    engines: list[Engine] = []

    async def make(slots: int, pacer: SharedPacer | None = None) -> Engine:
        store, metrics = FakeStore(), Metrics()
        pacer = pacer or SharedPacer(
            MemoryGrid(time.monotonic, 1000.0), rate=1000.0, bucket_size=1000, instance_timeout_seconds=30
        )
        pool = CallPool(
            store=store,
            carrier=FakeCarrier(),
            pacer=pacer,
            metrics=metrics,
            build_request=request_for,
            max_concurrent_calls=slots,
            reconcile_after_seconds=60.0,
        )
        scheduler = Scheduler(
            store=store, pool=pool, pacer=pacer, metrics=metrics, tick_seconds=30.0, instance_timeout_seconds=30.0
        )
        pool.on_slot_freed = scheduler.wake
        engine = Engine(store, pool, scheduler)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        for task in engine.tasks:
            task.cancel()
        await asyncio.gather(*engine.tasks, return_exceptions=True)
        await engine.pool.cancel_all()


# -- fair share -----------------------------------------------------------------------


async def test_one_pass_gives_every_campaign_its_share(build: Build) -> None:
    """One pass over a huge, a small and another huge campaign: the small one gets all
    its due calls, each huge one at least its share (budget / campaigns), and the
    pass fills exactly the free slots."""
    engine = await build(slots=12)
    store = engine.store
    huge_a, small, huge_c = store.add_campaign("a", 1000), store.add_campaign("b", 3), store.add_campaign("c", 1000)
    await engine.scheduler.step()
    assert store.claimed_by(small) == 3
    assert store.claimed_by(huge_a) >= 4 and store.claimed_by(huge_c) >= 4
    assert sum(c.got for c in store.claims) == 12
    assert all(c.asked <= 12 // 3 for c in store.claims[:-1]), "only the last campaign asked takes the remainder"


async def test_rotation_serves_every_campaign_when_the_budget_is_smaller_than_their_number(build: Build) -> None:
    """With one slot and three campaigns, three passes claim one call of each: the
    campaign asked first rotates, so none starves the others."""
    engine = await build(slots=1)
    campaigns = [engine.store.add_campaign(name, 100) for name in ("a", "b", "c")]
    firsts: list[uuid.UUID] = []
    for _ in campaigns:
        before = len(engine.store.claims)
        await engine.scheduler.step()
        [claim] = engine.store.claims[before:]
        assert claim.got == 1
        firsts.append(claim.campaign_id)
        await engine.live(1)
        await engine.end(engine.store.live_ids())
    assert sorted(firsts) == sorted(c.id for c in campaigns)


# -- what one pass may claim ----------------------------------------------------------


async def test_claims_never_exceed_the_free_slots(build: Build) -> None:
    """A pass claims the free slots and no more; a full pool claims nothing; freed
    slots are claimed again, up to the pool's size."""
    engine = await build(slots=10)
    campaign = engine.store.add_campaign("a", 100)
    await engine.scheduler.step()
    await engine.live(10)
    await engine.scheduler.step()  # full: no claim at all
    assert engine.store.claims == [Claim(campaign.id, 10, 10)]
    await engine.end(engine.store.live_ids()[:3])
    await engine.scheduler.step()
    await engine.live(10)
    assert engine.store.claims == [Claim(campaign.id, 10, 10), Claim(campaign.id, 3, 3)]
    assert engine.pool.peak_live == 10


async def test_claims_never_exceed_the_pacers_budget(build: Build) -> None:
    """With 50 free slots but a pacer at 6/s, which lets a pass claim 7 calls (a second
    of dials and one more), one pass over two campaigns claims 7 calls in all."""
    clock = FakeClock()
    pacer = SharedPacer(MemoryGrid(clock, 6.0), rate=6.0, bucket_size=2, instance_timeout_seconds=30, clock=clock)
    assert pacer.available_within(scheduler_module.CLAIM_HORIZON) == 7
    engine = await build(slots=50, pacer=pacer)
    first, second = engine.store.add_campaign("a", 100), engine.store.add_campaign("b", 100)
    await engine.scheduler.step()
    assert sum(c.got for c in engine.store.claims) == 7
    assert engine.store.claimed_by(first) >= 3 and engine.store.claimed_by(second) >= 3
    await pacer.close()


# -- coalescing freed slots -----------------------------------------------------------


async def test_slots_freed_one_by_one_are_claimed_by_one_pass(
    build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a nearly full pool, a freed slot does not claim at once: the loop waits a
    moment, and the slots freed meanwhile are claimed together by one pass."""
    # Wide enough that the four frees below, a few loop turns each, always fit in it.
    monkeypatch.setattr(scheduler_module, "COALESCE_SECONDS", 0.5)
    engine = await build(slots=50)
    campaign = engine.store.add_campaign("a", 1000)
    engine.run()
    await engine.live(50)
    filled = len(engine.store.claims)
    for call_id in engine.store.live_ids()[:4]:
        await engine.end([call_id])
    await engine.live(50)
    assert engine.store.claims[filled:] == [Claim(campaign.id, 4, 4)]


async def test_with_many_slots_free_a_freed_slot_is_claimed_at_once(
    build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Coalescing holds only while fewer than a tenth of the slots are free: in a pool
    of 10 a freed slot is claimed by the next pass, without the wait."""
    monkeypatch.setattr(scheduler_module, "COALESCE_SECONDS", 30.0)
    engine = await build(slots=10)
    campaign = engine.store.add_campaign("a", 100)
    engine.run()
    await engine.live(10)
    filled = len(engine.store.claims)
    await engine.end(engine.store.live_ids()[:1])
    await engine.live(10)
    assert engine.store.claims[filled:] == [Claim(campaign.id, 1, 1)]
