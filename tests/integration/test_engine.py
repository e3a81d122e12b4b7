"""The dialing engine end to end: a real daemon (scheduler, pool, webhooks) on a real
PostgreSQL, dialing through the real `twilio` package over loopback HTTP into the
carrier simulator, which calls back with signed webhooks."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from dialer.carrier.simulator import (
    RunningSimulator,
)
from tests.conftest import StartDaemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import wait_for
from tests.invariants import (
    assert_attempts_match_carrier,
    assert_counters_true,
    assert_dialed_once_each,
    assert_no_overlapping_live_calls,
)


async def campaign_status(conn: asyncpg.Connection, cid: uuid.UUID) -> str:
    return str(await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid))


async def dispositions(conn: asyncpg.Connection, cid: uuid.UUID) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT ct.phone_number, cc.call_status FROM campaign_contacts cc "
        "JOIN contacts ct ON ct.id = cc.contact_id WHERE cc.campaign_id = $1",
        cid,
    )
    return {r["phone_number"]: r["call_status"] for r in rows}


async def test_scripted_500_contact_campaign_completes(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """Answered, busy-then-answered, always no-answer, carrier-rejected number, DNC and
    unparseable numbers each end with the right disposition; dials ≤ max_retries + 1;
    counters equal aggregates; every carrier call is one row."""
    cid = await make_campaign(conn, status="draft", max_retries=2, retry_delay_minutes=0)
    plan = {
        0: (["answered"], "completed", 1),
        1: (["busy", "answered"], "completed", 2),
        2: (["no-answer"], "failed", 3),
        3: (["error:400:21211"], "invalid_number", 0),  # refused: no call is created
        4: (["answered"], "do_not_call", 0),
    }
    numbers = [madrid_number(i) for i in range(500)]
    for i, number in enumerate(numbers):
        sim.simulator.script(number, plan[i % 5][0])
        if i % 5 == 4:
            await conn.execute("INSERT INTO do_not_call (phone_number, reason) VALUES ($1, 'asked')", number)
    await add_contacts(conn, cid, numbers)
    await add_contacts(conn, cid, ["+3412", "+34 91 bad"])
    await start_daemon(max_concurrent_calls=100, calls_per_second=500, bucket_size=50)
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)

    async def done() -> bool:
        return await campaign_status(conn, cid) == "completed"

    await wait_for(done, 90, "the campaign to complete")
    final = await dispositions(conn, cid)
    for i, number in enumerate(numbers):
        _, expected, dials = plan[i % 5]
        assert final[number] == expected, (number, final[number], expected)
        assert sim.simulator.dials_to(number) == dials, number
    assert final["+3412"] == final["+34 91 bad"] == "invalid_number"
    counts = await conn.fetch("SELECT call_count FROM campaign_contacts WHERE campaign_id = $1", cid)
    assert max(r["call_count"] for r in counts) <= 3
    retries = await conn.fetch(
        """
        SELECT r.scheduled_at, p.ended_at, r.dialed_at FROM calls r
        JOIN calls p ON p.contact_id = r.contact_id AND p.retry_count = r.retry_count - 1
        WHERE r.retry_count > 0
        """
    )
    assert len(retries) == 100 + 200
    assert all(r["scheduled_at"] >= r["ended_at"] and r["dialed_at"] >= r["scheduled_at"] for r in retries)
    await assert_counters_true(conn)
    await assert_attempts_match_carrier(conn, sim.simulator.calls)
    await assert_no_overlapping_live_calls(conn)


async def _pause_like(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon, status: str
) -> tuple[uuid.UUID, list[str], float]:
    cid = await make_campaign(conn, status="active", max_retries=0)
    numbers = [madrid_number(i) for i in range(150)]
    await add_contacts(conn, cid, numbers)
    await start_daemon(max_concurrent_calls=20, calls_per_second=40, bucket_size=1)

    async def some_dialed() -> bool:
        return len(sim.simulator.calls) >= 20

    await wait_for(some_dialed, 30, "the first dials")
    await conn.execute(f"UPDATE campaigns SET status = '{status}' WHERE id = $1", cid)
    committed = time.monotonic()
    await wait_for(lambda: _no_live(conn, cid), 30, "live calls to finish")
    late = [t for t in sim.simulator.create_times() if t > committed]
    lag = (max(late) - committed) if late else 0.0
    print(f"\n{status}: carrier requests after the commit: {len(late)}, lag to the last one: {lag * 1000:.1f} ms")
    # A request already on the wire at commit time may land a moment later; nothing
    # may start after the change is visible (the dial gate reads it in the database).
    assert lag < 0.1
    return cid, numbers, committed


async def _no_live(conn: asyncpg.Connection, cid: uuid.UUID) -> bool:
    n = await conn.fetchval(
        "SELECT count(*) FROM calls WHERE campaign_id = $1 AND status IN ('pending', 'in_progress')", cid
    )
    return bool(n == 0)


async def test_pause_stops_dials_and_resume_finishes(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """No carrier request starts after a pause is visible; resume dials the rest,
    each contact exactly once."""
    cid, numbers, _ = await _pause_like(conn, sim, start_daemon, "paused")
    dialed_at_pause = len(sim.simulator.calls)
    assert dialed_at_pause < len(numbers)
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)

    async def done() -> bool:
        return await campaign_status(conn, cid) == "completed"

    await wait_for(done, 60, "the resumed campaign to complete")
    assert_dialed_once_each(sim.simulator, numbers)
    await assert_counters_true(conn)


async def test_cancel_stops_dials_and_finalises_every_contact(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """After cancel: no dial, scheduled calls cancelled, every contact final."""
    cid, numbers, committed = await _pause_like(conn, sim, start_daemon, "cancelled")

    async def all_final() -> bool:
        final = await dispositions(conn, cid)
        return all(v in ("completed", "failed", "cancelled") for v in final.values())

    await wait_for(all_final, 30, "every contact to be final")
    final = await dispositions(conn, cid)
    assert sum(v == "cancelled" for v in final.values()) >= len(numbers) - len(sim.simulator.calls)
    assert await campaign_status(conn, cid) == "cancelled"
    assert not [t for t in sim.simulator.create_times() if t > committed + 0.1]
    await assert_counters_true(conn)


async def test_pacing_holds_the_rate(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """At 5 calls/s the carrier sees 5 ± 10 % dials per second and never more than
    the bucket allows in any one-second window."""
    cid = await make_campaign(conn, status="active", max_retries=0)
    await add_contacts(conn, cid, [madrid_number(i) for i in range(60)])
    await start_daemon(max_concurrent_calls=50, calls_per_second=5, bucket_size=1)

    async def enough() -> bool:
        return len(sim.simulator.create_times()) >= 21

    await wait_for(enough, 30, "21 dials")
    times = sorted(sim.simulator.create_times())[:21]
    rate = (len(times) - 1) / (times[-1] - times[0])
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    print(f"\npacing: {rate:.2f} dials/s (target 5), worst 1-second window {worst}")
    assert 4.5 <= rate <= 5.5
    # Bucket size 1: dials are at least 1/rate apart, so a one-second window holds
    # at most 5 (6 only if network jitter bunched two arrivals).
    assert worst <= 6


async def test_live_calls_never_exceed_the_pool(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """With slow calls and a fast bucket, live calls stay at max_concurrent_calls,
    and a campaign's own cap holds below it."""
    sim.simulator.settings = sim.simulator.settings.model_copy(update={"time_scale": 0.1})
    big = await make_campaign(conn, status="active", max_retries=0)
    await add_contacts(conn, big, [madrid_number(i) for i in range(40)])
    capped = await make_campaign(conn, status="active", max_retries=0, max_concurrent_calls=2)
    await add_contacts(conn, capped, [madrid_number(100 + i) for i in range(20)])
    daemon = await start_daemon(max_concurrent_calls=6, calls_per_second=100, bucket_size=10)
    peak_capped = 0

    async def done() -> bool:
        nonlocal peak_capped
        live = await conn.fetchval(
            "SELECT count(*) FROM calls WHERE campaign_id = $1 AND status IN ('pending', 'in_progress')", capped
        )
        peak_capped = max(peak_capped, live)
        return await campaign_status(conn, big) == await campaign_status(conn, capped) == "completed"

    await wait_for(done, 60, "both campaigns to complete", interval=0.02)
    print(f"\npeak live: pool {daemon.pool.peak_live}, carrier {sim.simulator.max_concurrent}, capped campaign {peak_capped}")
    assert daemon.pool.peak_live == 6
    assert sim.simulator.max_concurrent <= 6
    assert 1 <= peak_capped <= 2


async def test_calling_hours_and_days_hold_dials(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """A window excluding now dials nothing; a day outside calling_days dials
    nothing; a window including now dials."""
    now = datetime.utcnow()
    closed_start = (now + timedelta(hours=2)).time().replace(microsecond=0)
    closed_end = (now + timedelta(hours=3)).time().replace(microsecond=0)
    other_day = [((now.isoweekday()) % 7) + 1]
    cid = await make_campaign(
        conn, status="active", timezone="UTC", calling_hours_start=closed_start, calling_hours_end=closed_end
    )
    await add_contacts(conn, cid, ["+441134960001"])
    cid2 = await make_campaign(conn, status="active", timezone="UTC", calling_days=other_day)
    await add_contacts(conn, cid2, ["+441134960002"])
    await start_daemon()

    async def scheduled() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM calls") == 2)

    await wait_for(scheduled, 10, "activation")
    await wait_for(lambda: _sleep_true(1.0), 5, "a second of dialing")
    assert sim.simulator.calls == []
    open_start = (now - timedelta(hours=1)).time().replace(microsecond=0)
    await conn.execute("UPDATE campaigns SET calling_hours_start = $2 WHERE id = $1", cid, open_start)

    async def dialed() -> bool:
        return len(sim.simulator.calls) == 1

    await wait_for(dialed, 10, "the in-hours dial")
    assert sim.simulator.calls[0].to == "+441134960001"


async def _sleep_true(seconds: float) -> bool:
    import asyncio

    await asyncio.sleep(seconds)
    return True


async def test_contacts_added_to_an_active_campaign_are_picked_up(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """Contacts linked while the campaign is running are dialed too, and the
    campaign completes only once they are final."""
    # Calls of 0.5-1.5 s: the first ones are still live when the others are added.
    sim.simulator.settings = sim.simulator.settings.model_copy(update={"time_scale": 0.5})
    cid = await make_campaign(conn, status="active", max_retries=0)
    first = [madrid_number(i) for i in range(3)]
    later = [madrid_number(100 + i) for i in range(3)]
    for number in first + later:
        sim.simulator.script(number, ["answered"])
    await add_contacts(conn, cid, first)
    await start_daemon()

    async def dialing() -> bool:
        return len(sim.simulator.calls) >= 1

    await wait_for(dialing, 10, "the first dial")
    await add_contacts(conn, cid, later)

    async def done() -> bool:
        return await campaign_status(conn, cid) == "completed"

    await wait_for(done, 30, "the campaign to complete")
    final = await dispositions(conn, cid)
    assert {n: final[n] for n in first + later} == dict.fromkeys(first + later, "completed")
    assert_dialed_once_each(sim.simulator, first + later)


async def test_scheduler_skips_the_claim_while_no_zone_is_in_hours(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """With every contact outside calling hours the scheduler does not run the claim
    (which would walk every due call to find none): it asks the campaign's zones."""
    now = datetime.utcnow()
    closed = ((now + timedelta(hours=2)).time().replace(microsecond=0),
              (now + timedelta(hours=3)).time().replace(microsecond=0))
    cid = await make_campaign(
        conn, status="active", timezone="UTC", calling_hours_start=closed[0], calling_hours_end=closed[1]
    )
    await add_contacts(conn, cid, ["+441134960001", "+441134960002"])
    daemon = await start_daemon(tick_seconds=0.1)
    claims = 0
    real_claim = daemon.store.claim

    async def counting_claim(campaign: Any, limit: int) -> Any:
        nonlocal claims
        claims += 1
        return await real_claim(campaign, limit)

    daemon.store.claim = counting_claim  # type: ignore[method-assign]

    async def scheduled() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM calls WHERE campaign_id = $1", cid) == 2)

    await wait_for(scheduled, 10, "activation")
    passes = daemon.scheduler.passes

    async def five_more_passes() -> bool:
        return daemon.scheduler.passes - passes >= 5

    # Counted in passes, not seconds: a loaded machine runs fewer passes per second.
    await wait_for(five_more_passes, 15, "five scheduler passes")
    assert claims == 0
    assert sim.simulator.calls == []
