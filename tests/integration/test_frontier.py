"""Activation up to the dial frontier (docs/architecture.md#activation): a campaign
gets calls only for the contacts its dialing will reach soon, topped up as it dials;
contacts in zones outside their calling hours never hold back those in open ones;
and nothing is lost or dialed twice for it (invariants 2, 4 and 5)."""

from __future__ import annotations

import uuid
from datetime import datetime, time

import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from dialer.store.lifecycle import LifecycleStore
from tests.conftest import StartDaemon
from tests.factories import FakeClock, add_contacts, madrid_number, make_campaign
from tests.harness import wait_for
from tests.invariants import assert_campaign_invariants, assert_counters_true, assert_dialed_once_each

NOON = datetime(2026, 11, 25, 12, 0)  # a Wednesday: 13:00 in Madrid, 21:00 in Tokyo


@pytest.fixture
async def store(pool: asyncpg.Pool) -> LifecycleStore:
    s = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=lambda _: None, clock=FakeClock(NOON))
    await s.register_instance(100.0)
    s.frontier, s.frontier_low, s.frontier_recheck = 30, 15, 0.0
    return s


async def _calls(conn: asyncpg.Connection, cid: uuid.UUID) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM calls WHERE campaign_id = $1", cid))


async def _pending_contacts(conn: asyncpg.Connection, cid: uuid.UUID) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1 AND call_status = 'pending'", cid
        )
    )


async def _claim(store: LifecycleStore, cid: uuid.UUID, limit: int) -> int:
    campaign = next(c for c in await store.dialable_campaigns() if c.id == cid)
    return len(await store.claim(campaign, limit))


async def test_activation_fills_the_frontier_and_tops_it_up_below_the_low_mark(
    conn: asyncpg.Connection, store: LifecycleStore
) -> None:
    """100 contacts, a frontier of 30: 30 calls, 70 contacts left pending; claiming
    10 leaves 20 due (above the low mark of 15): nothing more; claiming 10 more
    leaves 10: topped up to 30 due again. Counters stay the aggregates of calls."""
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, [madrid_number(i) for i in range(100)])
    assert await store.housekeep()
    assert await _calls(conn, cid) == 30
    assert await _pending_contacts(conn, cid) == 70
    await assert_counters_true(conn, cid)
    assert await store.housekeep()
    assert await _calls(conn, cid) == 30  # full: nothing more

    assert await _claim(store, cid, 10) == 10
    assert await store.housekeep()
    assert await _calls(conn, cid) == 30  # 20 due, above the low mark

    assert await _claim(store, cid, 10) == 10
    assert await store.housekeep()
    assert await _calls(conn, cid) == 50  # 10 due: topped up to 30
    assert await _pending_contacts(conn, cid) == 50
    row = await conn.fetchrow("SELECT total_calls, pending_calls FROM campaigns WHERE id = $1", cid)
    assert row is not None
    assert (row["total_calls"], row["pending_calls"]) == (50, 50)  # 20 claimed + 30 due
    await assert_counters_true(conn, cid)


async def test_invalid_numbers_take_no_room_in_the_frontier(
    conn: asyncpg.Connection, store: LifecycleStore
) -> None:
    """Contacts marked invalid_number on the way get no call and do not count: the
    frontier still holds 30 calls."""
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, ["+3412"] * 1 + [f"+34 91 bad {i}" for i in range(19)])
    await add_contacts(conn, cid, [madrid_number(i) for i in range(100)])
    assert await store.housekeep()
    assert await _calls(conn, cid) == 30
    invalid = await conn.fetchval(
        "SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1 AND call_status = 'invalid_number'", cid
    )
    assert invalid == 20
    await assert_counters_true(conn, cid)


async def test_contacts_outside_their_hours_do_not_hold_back_open_zones(
    conn: asyncpg.Connection, store: LifecycleStore
) -> None:
    """40 contacts in Tokyo (21:00, outside 09:00-20:00) linked before 20 in Madrid
    (13:00): the Tokyo calls fill no frontier, so activation goes on until Madrid's
    contacts have calls the claim can take. Counting every due call instead, the
    frontier would stay full of Tokyo calls and Madrid would never be dialed."""
    cid = await make_campaign(
        conn, status="active", calling_hours_start=time(9), calling_hours_end=time(20), timezone="UTC"
    )
    await add_contacts(conn, cid, [madrid_number(i) for i in range(40)], timezone="Asia/Tokyo")
    await add_contacts(conn, cid, [madrid_number(100 + i) for i in range(20)], timezone="Europe/Madrid")
    for _ in range(5):  # each pass schedules up to the frontier
        assert await store.housekeep()
    assert await _pending_contacts(conn, cid) == 0
    assert await _claim(store, cid, 100) == 20
    await assert_counters_true(conn, cid)


async def test_a_campaign_larger_than_its_frontier_completes_with_each_contact_dialed_once(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """300 contacts through a frontier of 40 (topped up below 20), with a retry for
    some: the campaign completes, every contact final, each dialed as its script
    says, counters true — the invariants, with activation spread over the run."""
    cid = await make_campaign(conn, status="draft", max_retries=1)
    numbers = [madrid_number(i) for i in range(300)]
    for i, number in enumerate(numbers):
        sim.simulator.script(number, ["busy", "answered"] if i % 10 == 0 else ["answered"])
    await add_contacts(conn, cid, numbers)
    daemon = await start_daemon(max_concurrent_calls=20, calls_per_second=200, bucket_size=20)
    daemon.store.frontier, daemon.store.frontier_low, daemon.store.frontier_recheck = 40, 20, 0.0
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)

    most_calls_at_once = 0

    async def done() -> bool:
        nonlocal most_calls_at_once
        row = await conn.fetchrow(
            "SELECT status::text, total_calls, successful_calls + failed_calls AS ended FROM campaigns WHERE id = $1",
            cid,
        )
        assert row is not None
        most_calls_at_once = max(most_calls_at_once, row["total_calls"] - row["ended"])
        return bool(row["status"] == "completed")

    await wait_for(done, 90, "the campaign to complete")
    # Never the whole campaign at once: open calls stayed near the frontier (40 due
    # plus up to 20 live and the retries waiting).
    assert most_calls_at_once < 100
    assert_dialed_once_each(sim.simulator, [n for i, n in enumerate(numbers) if i % 10])
    assert all(sim.simulator.dials_to(n) == 2 for n in numbers[::10])
    await assert_campaign_invariants(conn, cid, sim.simulator.calls, max_retries=1)
