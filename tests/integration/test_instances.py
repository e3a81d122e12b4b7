"""Several daemons on one database: a callback received by one instance wakes the
call coroutine waiting on another, through NOTIFY."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from dialer.carrier.simulator import RunningSimulator
from dialer.service import Daemon
from tests.conftest import StartDaemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import daemon_settings, wait_for
from tests.invariants import assert_counters_true


def _callbacks_applied(daemon: Daemon) -> float:
    text = daemon.metrics.render().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dialer_callbacks_total" and sample.labels.get("result") == "applied":
                return sample.value
    return 0.0


async def test_callback_on_one_instance_wakes_the_coroutine_on_another(
    db_url: str, conn: asyncpg.Connection, sim: RunningSimulator
) -> None:
    """Instance A dials; the carrier calls back instance B (as a load balancer
    might); A's coroutine learns of the end within moments, not after the
    reconcile timeout."""
    receiver = Daemon(daemon_settings(db_url, sim.url), db_url=db_url)
    await receiver.start()
    receiver.pool.stop_dialing()  # B only receives callbacks
    # A's public_url is B's address, as behind a load balancer: every callback for
    # A's calls reaches B.
    settings = daemon_settings(db_url, sim.url, reconcile_after_seconds=60)
    settings = settings.model_copy(
        update={"http": settings.http.model_copy(update={"public_url": receiver.settings.http.public_url})}
    )
    dialer = Daemon(settings, db_url=db_url)
    await dialer.start()
    try:
        cid = await make_campaign(conn, status="active", max_retries=0)
        await add_contacts(conn, cid, [madrid_number(i) for i in range(5)])
        started = time.monotonic()

        async def done() -> bool:
            return str(await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid)) == "completed"

        await wait_for(done, 30, "the campaign to complete")
        took = time.monotonic() - started
        print(f"\ncross-instance campaign of 5 calls completed in {took:.2f} s (reconcile timeout 60 s)")
        assert took < 20
        claimed_by = {r["claimed_by"] for r in await conn.fetch("SELECT claimed_by FROM calls")}
        assert claimed_by == {dialer.instance_id}
        assert _callbacks_applied(receiver) >= 5
        assert _callbacks_applied(dialer) == 0
        await assert_counters_true(conn)
    finally:
        await dialer.stop(drain_seconds=1)
        await receiver.stop(drain_seconds=1)


async def test_an_instance_beats_well_within_its_timeout(conn: asyncpg.Connection, start_daemon: StartDaemon) -> None:
    """With instance_timeout_seconds = 1.5 the heartbeat is never that old: a live
    instance is not taken for dead (its calls adopted, its part of the dial rate
    handed out) between two beats."""
    daemon = await start_daemon(instance_timeout_seconds=1.5)
    oldest = 0.0
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        age = await conn.fetchval(
            "SELECT extract(epoch FROM timezone('utc', now()) - heartbeat_at) FROM dialer_instances WHERE id = $1",
            daemon.instance_id,
        )
        oldest = max(oldest, float(age))
        await asyncio.sleep(0.05)
    assert oldest < 1.5, oldest
