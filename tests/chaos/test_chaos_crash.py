"""Crash recovery: a real `dialer run` subprocess SIGKILLed at random points and
restarted, Postgres restarted under it, callbacks dropped, duplicated and reordered —
and the campaign still ends with SPEC §10's invariants intact."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import asyncpg
import pytest

from dialer import database
from dialer.carrier.simulator import RunningSimulator
from tests.chaos.procs import DaemonProcess, assert_campaign_invariants, daemons
from tests.conftest import PgServer
from tests.factories import madrid_number, make_campaign

pytestmark = pytest.mark.slow

CONTACTS = 1000
MAX_RETRIES = 2


async def _bulk_contacts(conn: asyncpg.Connection, campaign_id: object, n: int, offset: int = 0) -> None:
    await conn.execute(
        """
        WITH c AS (
            INSERT INTO contacts (phone_number, first_name)
            SELECT '+3491' || lpad((g + $3)::text, 7, '0'), 'Contact ' || g FROM generate_series(0, $2 - 1) g
            RETURNING id
        )
        INSERT INTO campaign_contacts (campaign_id, contact_id) SELECT $1, id FROM c
        """,
        campaign_id,
        n,
        offset,
    )


async def _connect_retrying(url: str, within: float = 30.0) -> asyncpg.Connection:
    deadline = time.monotonic() + within
    while True:
        try:
            return await database.connect(url)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _wait_completed(url: str, campaign_id: object, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            conn = await _connect_retrying(url)
            try:
                status = await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", campaign_id)
            finally:
                await conn.close()
            if status == "completed":
                return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"campaign not completed within {within}s")


async def test_sigkill_three_times_and_postgres_restart_lose_nothing(
    db_url: str, pg_server: PgServer, chaos_sim: RunningSimulator, log_dir: Path
) -> None:
    """1,000 contacts, 5 % callbacks dropped, duplicates and reordering, the daemon
    SIGKILLed three times at random moments and Postgres restarted once: the campaign
    completes, no contact is dialed twice at once or more than max_retries + 1 times,
    counters are true and every carrier call is exactly one row."""
    if pg_server.embedded is None:
        pytest.skip("needs the embedded server to restart it")
    sim = chaos_sim.simulator
    sim.drop, sim.duplicate_final, sim.reorder = 0.05, 0.2, 0.2
    rng = random.Random(7)
    conn = await database.connect(db_url)
    try:
        cid = await make_campaign(conn, status="draft", max_retries=MAX_RETRIES, retry_delay_minutes=0)
        await _bulk_contacts(conn, cid, CONTACTS)
        # A few contacts that always fail, so retries run through the crashes too.
        for i in range(0, CONTACTS, 10):
            sim.script(madrid_number(i), ["busy"])
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
    finally:
        await conn.close()

    daemon = DaemonProcess(db_url, chaos_sim.url, log_dir, calls_per_second=150, max_concurrent_calls=60)
    started = time.monotonic()
    kills: list[int] = []
    restart_ready: list[float] = []
    with daemons(daemon):
        await daemon.start()
        targets = sorted(rng.sample(range(100, 800), 3))
        for target in targets:
            await sim.wait_for_calls(target, within=60)
            await asyncio.sleep(rng.random() * 0.05)  # land anywhere in a call's life
            daemon.sigkill()
            kills.append(len(sim.calls))
            await asyncio.sleep(rng.random())
            t0 = time.monotonic()
            await daemon.start()
            restart_ready.append(time.monotonic() - t0)
        # Postgres restarts after the last kill: nothing but the daemon's own
        # reconnection and rescue may bring the campaign home.
        await sim.wait_for_calls(targets[-1] + 150, within=60)
        t0 = time.monotonic()
        await asyncio.to_thread(pg_server.embedded.restart)
        print(f"\npostgres restarted at {len(sim.calls)} calls in {time.monotonic() - t0:.2f}s")
        await _wait_completed(db_url, cid, 120)
        elapsed = time.monotonic() - started
        daemon.stop()
    dropped = sum(1 for c in sim.calls for cb in c.callbacks if cb.dropped)
    failed = sum(1 for c in sim.calls for cb in c.callbacks if not cb.dropped and not cb.delivered)
    print(
        f"\ncrash chaos: {CONTACTS} contacts, {len(sim.calls)} carrier calls in {elapsed:.1f}s; "
        f"SIGKILL at {kills} calls; restarts ready in {[round(t, 2) for t in restart_ready]}s; "
        f"callbacks dropped {dropped}, undeliverable (daemon down/503) {failed}"
    )
    conn = await _connect_retrying(db_url)
    try:
        await assert_campaign_invariants(conn, cid, sim.calls, MAX_RETRIES)
        final = await conn.fetchval(
            "SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1 AND call_status IN ('completed', 'failed')",
            cid,
        )
        assert final == CONTACTS
    finally:
        await conn.close()
