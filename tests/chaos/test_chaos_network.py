"""Network faults on the LISTEN connection, through a TCP proxy the test steers: a
black-holed path (no error, no FIN: only the keep-alive probe can notice), a cut,
and pg_terminate_backend of every backend of the daemon. Each time the daemon must
notice within its keep-alive interval, reconnect, re-scan, and finish the campaign."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from dialer import database
from dialer.carrier.simulator import RunningSimulator
from tests.chaos.procs import DaemonProcess, bulk_contacts, daemons, wait_completed
from tests.chaos.proxy import TcpProxy
from tests.factories import make_campaign
from tests.invariants import assert_campaign_invariants

pytestmark = pytest.mark.slow

KEEPALIVE = 1.0  # seconds: DIALER_DATABASE__KEEPALIVE_SECONDS of the daemons in this suite
CONTACTS = 400


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def _ready(http: aiohttp.ClientSession, daemon: DaemonProcess) -> bool:
    try:
        async with http.get(f"{daemon.url}/readyz") as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _until(http: aiohttp.ClientSession, daemon: DaemonProcess, want: bool, within: float) -> float:
    """Seconds until /readyz says `want`; fails after `within`."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await _ready(http, daemon) is want:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"/readyz did not become {want} within {within}s")


async def test_listen_blackhole_cut_and_terminate_are_survived(
    db_url: str, chaos_sim: RunningSimulator, log_dir: Path
) -> None:
    """Black-holed LISTEN path detected within 2 x keep-alive; a cut and a
    pg_terminate_backend of all the daemon's backends recovered at once; the
    campaign completes with every invariant intact."""
    sim = chaos_sim.simulator
    parts = urlsplit(db_url)
    assert parts.port is not None
    proxy = TcpProxy("127.0.0.1", parts.port)
    await proxy.start()
    conn = await database.connect(db_url)
    try:
        cid = await make_campaign(conn, status="draft", max_retries=1, retry_delay_minutes=0)
        await bulk_contacts(conn, cid, CONTACTS)
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
    finally:
        await conn.close()
    # Slow pacing so the campaign is still running through every fault.
    daemon = DaemonProcess(
        db_url, chaos_sim.url, log_dir, listen_url=_via(db_url, proxy.port), calls_per_second=40
    )
    numbers: dict[str, float] = {}
    try:
        with daemons(daemon):
            await daemon.start()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                await sim.wait_for_calls(40, within=30)
                assert proxy.open_links == 1, "the LISTEN connection goes through the proxy"

                proxy.blackhole()
                numbers["blackhole_detected_s"] = await _until(http, daemon, False, 4 * KEEPALIVE)
                await asyncio.sleep(1.5)  # reconnect attempts into the black hole time out
                proxy.restore()
                numbers["blackhole_recovered_s"] = await _until(http, daemon, True, 15)

                accepted = proxy.accepted
                assert proxy.cut() == 1
                numbers["cut_reconnected_s"] = await proxy.wait_linked(accepted, within=10)
                await _until(http, daemon, True, 10)

                admin = await database.connect(db_url)
                try:
                    accepted = proxy.accepted
                    killed_at = time.monotonic()
                    killed = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                finally:
                    await admin.close()
                await proxy.wait_linked(accepted, within=10)
                numbers["terminate_listen_reconnected_s"] = time.monotonic() - killed_at
                numbers["terminated_backends"] = killed
                await _until(http, daemon, True, 10)
                numbers["terminate_ready_s"] = time.monotonic() - killed_at

            await wait_completed(db_url, cid, 90)
            daemon.stop()
    finally:
        await proxy.stop()
    print("\nnetwork chaos:", {k: round(v, 3) for k, v in numbers.items()}, f"carrier calls {len(sim.calls)}")
    assert numbers["blackhole_detected_s"] <= 2 * KEEPALIVE + 0.5
    assert numbers["cut_reconnected_s"] < 2.0
    assert numbers["terminate_listen_reconnected_s"] < 2.0
    assert numbers["terminated_backends"] >= 2
    conn = await database.connect(db_url)
    try:
        await assert_campaign_invariants(conn, cid, sim.calls, max_retries=1)
    finally:
        await conn.close()
