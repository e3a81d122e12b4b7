"""The dial rate shared by every instance (docs/architecture.md#pacing), on a real
database: `dialer_take_dial_slots` (sql/0016) hands out slots of one grid whoever asks,
an equal share of the horizon at most, at the least rate of the live instances, and
keeps a capped campaign to its cap without taking slots from the others; pacers of
three instances together dial at the account's rate."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from dialer.models import DialSlots
from dialer.pacing import SharedPacer
from dialer.store.lifecycle import LifecycleStore
from tests.conftest import StartDaemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import wait_for
from tests.invariants import worst_window

TIMEOUT = 30.0  # seconds: dialer.instance_timeout_seconds of these instances


async def _instance(pool: asyncpg.Pool, rate: float) -> LifecycleStore:
    store = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=lambda _t: None)
    await store.register_instance(rate)
    return store


def _at(grant: DialSlots) -> list[float]:
    """The grant's slots on the database's clock (offsets are from each grant's own now)."""
    return [grant.db_now + o for o in grant.offsets]


async def test_a_grant_is_an_equal_share_of_the_horizon_on_one_grid(pool: asyncpg.Pool) -> None:
    """Two live instances at 20/s with a 0.5 s horizon: each grant is at most 5 slots
    (20 * 0.5 / 2), 1/20 s apart, the second instance's after the first's; the grid
    reaches one interval further per live instance (0.6 s), so a third grant finds
    what is left of it, two slots (three if a new one came within reach meanwhile),
    and a fourth is told when to ask again."""
    a, b = await _instance(pool, 20.0), await _instance(pool, 20.0)
    first = await a.take_dial_slots(None, 100, rate=20.0, horizon=0.5, live_within=TIMEOUT)
    second = await b.take_dial_slots(None, 100, rate=20.0, horizon=0.5, live_within=TIMEOUT)
    assert (first.live, first.rate, first.campaign_rate) == (2, 20.0, None)
    assert len(first.offsets) == 5
    assert 0 <= first.offsets[0] <= 0.05
    assert all(y - x == pytest.approx(0.05, abs=1e-6) for x, y in zip(first.offsets, first.offsets[1:], strict=False)), first.offsets
    assert second.offsets and _at(second)[0] > _at(first)[-1]
    third = await a.take_dial_slots(None, 100, rate=20.0, horizon=0.5, live_within=TIMEOUT)
    assert 2 <= len(third.offsets) <= 3, third.offsets
    assert third.offsets[-1] <= 0.6 + 1e-6
    fourth = await a.take_dial_slots(None, 100, rate=20.0, horizon=0.5, live_within=TIMEOUT)
    if not fourth.offsets:  # unless the time since made room for one
        assert 0 < fourth.retry_after <= 0.05 + 1e-6


async def test_dead_and_stopped_instances_leave_the_share_and_the_rate(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """The account's rate is the least of the live instances' (B at 10/s holds A at 10);
    once B's heartbeat is stale, or B stopped, A alone has the whole of its 20/s."""
    a, b = await _instance(pool, 20.0), await _instance(pool, 10.0)
    grant = await a.take_dial_slots(None, 1, rate=20.0, horizon=0.5, live_within=TIMEOUT)
    assert (grant.live, grant.rate) == (2, 10.0)
    await conn.execute(
        "UPDATE dialer_instances SET heartbeat_at = heartbeat_at - interval '1 minute' WHERE id = $1",
        b.instance_id,
    )
    grant = await a.take_dial_slots(None, 1, rate=20.0, horizon=0.5, live_within=TIMEOUT)
    assert (grant.live, grant.rate) == (1, 20.0)
    await b.heartbeat(0.0)
    await b.mark_stopped()
    grant = await a.take_dial_slots(None, 1, rate=20.0, horizon=0.5, live_within=TIMEOUT)
    assert (grant.live, grant.rate) == (1, 20.0)


async def test_an_instance_registered_without_a_rate_sets_none(pool: asyncpg.Pool) -> None:
    """A store registered without calls_per_second (one that does not dial) leaves the
    account's rate to the instances that do."""
    await LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=lambda _t: None).register_instance()
    a = await _instance(pool, 20.0)
    grant = await a.take_dial_slots(None, 1, rate=20.0, horizon=0.5, live_within=TIMEOUT)
    assert grant.rate == 20.0


async def test_instances_record_their_rate_and_what_they_dial(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """dialer_instances shows each instance's configured rate, its share of the
    account's rate and the dials per second its last heartbeat reported (the console's
    instances page reads them)."""
    a = await _instance(pool, 12.5)
    await a.heartbeat(3.25, 6.25)
    row = await conn.fetchrow(
        "SELECT calls_per_second, rate_share, dial_rate FROM dialer_instances WHERE id = $1", a.instance_id
    )
    assert row is not None and tuple(row) == (12.5, 6.25, 3.25)


async def test_a_capped_campaign_keeps_its_rate_and_skips_slots_without_taking_them(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """Account 2/s, campaign capped at 0.5/s, a 5 s horizon: the campaign's slots are
    on the account's grid about 2 s apart (one account interval early at most), and
    the slots it skipped go to the next uncapped grant: the grid has no hole; its next
    grant keeps to its schedule."""
    store = await _instance(pool, 2.0)
    cid = await make_campaign(conn, calls_per_second=0.5)
    capped = await store.take_dial_slots(cid, 10, rate=2.0, horizon=5.0, live_within=TIMEOUT)
    assert capped.campaign_rate == 0.5
    assert len(capped.offsets) == 3  # its grant is at most 0.5/s * 5 s
    gaps = [y - x for x, y in zip(capped.offsets, capped.offsets[1:], strict=False)]
    assert all(1.5 - 1e-6 <= g <= 2.0 + 1e-6 for g in gaps), gaps
    assert capped.offsets[-1] - capped.offsets[0] == pytest.approx(3.5)  # 2 s each, the second one 0.5 s early
    free = await store.take_dial_slots(None, 10, rate=2.0, horizon=5.0, live_within=TIMEOUT)
    assert free.campaign_rate is None
    assert _at(free)[0] < _at(capped)[1]  # a slot the campaign skipped
    # Slot numbers (k / rate on the database's clock): each granted once, and no hole
    # (the grid's own list drops slots already past, so it is not read here).
    slots = sorted(round(at * 2.0) for at in _at(capped) + _at(free))
    assert slots == list(range(slots[0], slots[0] + len(slots)))
    again = await store.take_dial_slots(cid, 10, rate=2.0, horizon=5.0, live_within=TIMEOUT)
    assert _at(again)[0] >= _at(capped)[-1] + 1.5 - 1e-6  # on its own schedule still
    assert len(again.offsets) == 1  # the rest of its next 5 s lies beyond the grid's reach


async def test_a_cap_no_tighter_than_the_account_is_no_cap(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """A campaign allowed as much as the account (or more) paces with the account only."""
    store = await _instance(pool, 5.0)
    cid = await make_campaign(conn, calls_per_second=5)
    grant = await store.take_dial_slots(cid, 3, rate=5.0, horizon=1.0, live_within=TIMEOUT)
    assert grant.campaign_rate is None
    assert len(grant.offsets) == 3
    assert await conn.fetchval("SELECT count(*) FROM dialer_campaign_pacing") == 0


async def test_a_new_rate_starts_after_the_last_slot_of_the_old(pool: asyncpg.Pool) -> None:
    """Slots granted at 2/s stay taken when an instance at 1/s joins: the first slot at
    the new rate comes a whole new interval after the last old one."""
    a = await _instance(pool, 2.0)
    old = await a.take_dial_slots(None, 4, rate=2.0, horizon=5.0, live_within=TIMEOUT)
    assert len(old.offsets) == 4
    await _instance(pool, 1.0)
    new = await a.take_dial_slots(None, 1, rate=2.0, horizon=5.0, live_within=TIMEOUT)
    assert new.rate == 1.0
    assert _at(new)[0] >= _at(old)[-1] + 1.0 - 1e-6


async def test_a_campaign_cap_must_be_positive(conn: asyncpg.Connection) -> None:
    """calls_per_second ≤ 0 is refused by the schema, naming its constraint."""
    with pytest.raises(asyncpg.CheckViolationError, match="campaigns_calls_per_second_check"):
        await make_campaign(conn, calls_per_second=0)


async def test_three_instances_dial_at_the_account_rate_together(pool: asyncpg.Pool) -> None:
    """Three pacers on three instances, each with more calls waiting than the whole
    rate: together they let through 40/s, no one-second window holds more than 41
    (bucket_size 1), and each instance gets a fair part."""
    rate, per_instance = 40.0, 30
    pacers = [
        SharedPacer(await _instance(pool, rate), rate=rate, bucket_size=1, instance_timeout_seconds=TIMEOUT)
        for _ in range(3)
    ]
    times: list[tuple[float, int]] = []

    async def call(i: int) -> None:
        await pacers[i].acquire()
        times.append((time.monotonic(), i))

    await asyncio.gather(*(call(i) for i in range(3) for _ in range(per_instance)))
    moments = sorted(t for t, _ in times)
    observed = (len(moments) - 1) / (moments[-1] - moments[0])
    print(f"\nthree pacers: {observed:.1f}/s, worst window {worst_window(moments)}, "
          f"grants {[p.grants for p in pacers]}, let go {[p.dropped for p in pacers]}")
    assert observed <= rate * 1.02
    assert observed >= rate * 0.85  # a late wake lets a slot go; never many on loopback
    assert worst_window(moments) <= rate + 1
    first_second = [i for t, i in times if t < moments[0] + 1.0]
    assert all(first_second.count(i) >= 8 for i in range(3)), first_second
    # Up to 7 slots a grant; empty grants (the horizon full) count too, more of them on a loaded machine.
    assert sum(p.grants for p in pacers) < len(moments) / 2, "slots come in batches"


async def test_a_capped_campaign_gets_its_cap_beside_uncapped_calls_of_two_instances(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """Account 4/s on two instances, each with more uncapped calls waiting than the
    whole rate; a campaign capped at 2/s has its calls waiting on one of them. The
    uncapped calls take the earliest free slot whenever they dial, so a capped
    campaign asking for its next slot only once it used the last found it taken every
    time: one dial every three account intervals (1.33/s). It holds its next slot
    too, and dials at its cap."""
    rate, cap = 4.0, 2.0
    cid = await make_campaign(conn, calls_per_second=cap)
    first, second = [
        SharedPacer(await _instance(pool, rate), rate=rate, bucket_size=1, instance_timeout_seconds=TIMEOUT)
        for _ in range(2)
    ]
    capped: list[float] = []
    uncapped: list[float] = []

    async def call(pacer: SharedPacer, campaign: uuid.UUID | None) -> None:
        await pacer.acquire(campaign)
        (uncapped if campaign is None else capped).append(time.monotonic())

    await asyncio.gather(
        *(call(first, None) for _ in range(6)),
        *(call(second, None) for _ in range(6)),
        *(call(first, cid) for _ in range(7)),
    )
    span = capped[-1] - capped[0]
    print(f"\ncapped: {len(capped) - 1} gaps in {span:.2f} s, worst window {worst_window(capped)}; "
          f"uncapped {len(uncapped)}, worst window of all {worst_window(sorted(capped + uncapped))}")
    assert (len(capped) - 1) / span >= 0.9 * cap, "the capped campaign dials at its cap"
    assert worst_window(capped) <= cap + 1
    assert worst_window(sorted(capped + uncapped)) <= rate + 1


async def test_a_call_held_up_at_the_gate_past_its_slot_is_not_sent_late(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """The dial gate takes longer than the slot's grace (a stalled database): the call
    is not sent on the missed slot; it takes a new one, passes the gate again, and
    dials once."""
    cid = await make_campaign(conn, status="draft", max_retries=0)
    await add_contacts(conn, cid, [madrid_number(1)])
    daemon = await start_daemon(calls_per_second=5, bucket_size=1)  # sent by 0.15 s after the slot
    gates: list[bool] = []
    real_gate = daemon.store.begin_dial

    async def stalled_gate(call_id: uuid.UUID, again: bool = False) -> bool:
        gates.append(again)
        if not again:
            await asyncio.sleep(0.3)
        return await real_gate(call_id, again=again)

    daemon.store.begin_dial = stalled_gate  # type: ignore[method-assign]
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)

    async def dialed() -> bool:
        return len(sim.simulator.calls) == 1

    await wait_for(dialed, 10, "the dial")
    assert gates == [False, True]
    assert daemon.pool.pacer.dropped == 1
