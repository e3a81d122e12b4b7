"""Connection and upload floods against a real `dialer run` process on loopback
(docs/operations.md#connection-and-memory-limits, docs/reliability.md): more idle
half-finished requests than the process has file descriptors, and many stalled
uploads. The listener, the database pool and the LISTEN connection keep working, the
log stays small, memory stays bounded, and the flood's connections are closed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from dialer import database
from dialer.carrier.simulator import RunningSimulator
from tests.chaos.procs import DaemonProcess, daemons
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import wait_for

pytestmark = pytest.mark.slow

FD_LIMIT = 256
FLOOD = 400  # idle connections: well past FD_LIMIT
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: dialer\r\n"  # the blank line never comes
ANSWER_BOUND = 2.0  # seconds for /healthz while flooded
LOG_BOUND = 64 * 1024  # bytes of daemon log for the whole flood

Flood = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def _flood(port: int, count: int, payload: bytes) -> Flood:
    """Open `count` connections at once, each sending `payload` and then nothing;
    connections the kernel or the daemon will not take are left out (bounded: 3 s)."""

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            async with asyncio.timeout(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)
                await writer.drain()
                return reader, writer
        except (OSError, TimeoutError):
            return None

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [c for c in opened if c is not None]


def _release(flood: Flood) -> None:
    for _reader, writer in flood:
        writer.transport.abort()


async def _closed_by_server(flood: Flood, within: float) -> int:
    """How many of the flood's connections the daemon closed within `within` seconds."""

    async def eof(reader: asyncio.StreamReader) -> bool:
        try:
            async with asyncio.timeout(within):
                while await reader.read(65536):
                    pass
            return True
        except TimeoutError:
            return False
        except OSError:  # reset by the daemon: closed too
            return True

    return sum(await asyncio.gather(*(eof(r) for r, _w in flood)))


async def _get(url: str, within: float = ANSWER_BOUND) -> tuple[int, float]:
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as http:
        async with http.get(url) as response:
            await response.read()
            return response.status, time.monotonic() - started


async def test_idle_connection_flood_past_the_fd_limit_leaves_the_daemon_working(
    db_url: str, chaos_sim: RunningSimulator, log_dir: Path
) -> None:
    """RLIMIT_NOFILE 256 and 400 idle half-header connections: /healthz and /readyz
    answer within 2 s, a campaign's signed callbacks are applied (database pool and
    LISTEN keep their descriptors), the flood is closed after the header timeout, and
    the log stays under 64 KB."""
    daemon = DaemonProcess(
        db_url, chaos_sim.url, log_dir, nofile=FD_LIMIT, max_concurrent_calls=5,
        env={"DIALER_HTTP__HEADER_TIMEOUT_SECONDS": "2"},
    )
    conn = await database.connect(db_url)
    try:
        with daemons(daemon):
            await daemon.start()
            log_before = daemon.log_path.stat().st_size
            flood = await _flood(daemon.port, FLOOD, HALF_REQUEST)
            try:
                assert len(flood) > FD_LIMIT, f"only {len(flood)} connections opened"
                status, seconds = await _get(f"{daemon.url}/healthz")
                assert status == 200 and seconds < ANSWER_BOUND
                status, _ = await _get(f"{daemon.url}/readyz")
                assert status == 200  # the database and the LISTEN connection are up
                campaign = await make_campaign(conn, status="active")
                await add_contacts(conn, campaign, [madrid_number(i) for i in range(3)])
                await _flood(daemon.port, 100, HALF_REQUEST)  # still flooding while it runs

                async def completed() -> bool:
                    status = await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", campaign)
                    return bool(status == "completed")

                await wait_for(completed, 20, "the campaign to complete through its signed callbacks")
                answered = await conn.fetchval(
                    "SELECT count(*) FROM calls WHERE campaign_id = $1 AND last_event_at IS NOT NULL", campaign
                )
                assert answered >= 3, "callbacks reached the daemon"
                # Every idle connection still open is closed once its header time is up.
                assert await _closed_by_server(flood, within=4.0) == len(flood)
            finally:
                _release(flood)
            log_bytes = daemon.log_path.stat().st_size - log_before
            text = daemon.log_path.read_text()
            assert log_bytes < LOG_BOUND, f"{log_bytes} bytes of log during the flood"
            assert "out of system resource" not in text
            assert "http_connections_shed" in text  # the operator hears of it, once
    finally:
        await conn.close()


async def test_accept_errors_at_the_fd_limit_are_logged_once_per_interval(
    db_url: str, chaos_sim: RunningSimulator, log_dir: Path
) -> None:
    """With the connection cap set above RLIMIT_NOFILE, accept() does fail (EMFILE):
    asyncio's per-connection, per-retry tracebacks become at most a couple of
    `http_accept_failed` lines, and the listener works again once the flood ends."""
    daemon = DaemonProcess(
        db_url, chaos_sim.url, log_dir, nofile=FD_LIMIT, max_concurrent_calls=5,
        env={"DIALER_HTTP__MAX_CONNECTIONS": "2000", "DIALER_HTTP__HEADER_TIMEOUT_SECONDS": "30"},
    )
    with daemons(daemon):
        await daemon.start()
        log_before = daemon.log_path.stat().st_size
        flood = await _flood(daemon.port, FLOOD, HALF_REQUEST)
        try:
            await asyncio.sleep(2)  # asyncio retries accept() every second: a few rounds of failures
        finally:
            _release(flood)

        async def answers() -> bool:
            try:
                return (await _get(f"{daemon.url}/healthz", within=1.0))[0] == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await wait_for(answers, 10, "/healthz once the flood is gone")
        with daemon.log_path.open("rb") as log:
            log.seek(log_before)
            lines = log.read().decode().splitlines()
        accept_lines = [line for line in lines if "http_accept_failed" in line]
        assert 1 <= len(accept_lines) <= 2, len(accept_lines)
        assert not any("out of system resource" in line and "http_accept_failed" not in line for line in lines)
        assert sum(len(line) for line in lines) < LOG_BOUND


async def test_stalled_uploads_keep_memory_bounded_and_are_closed(
    db_url: str, chaos_sim: RunningSimulator, log_dir: Path
) -> None:
    """1,500 connections each sending 60 KB of a 64 KiB body and stopping: the
    daemon's RSS grows by less than 40 MB (today's code held all 90 MB, and copies),
    every connection is closed after the body timeout, and nothing stays buffered."""
    daemon = DaemonProcess(
        db_url, chaos_sim.url, log_dir,
        env={
            "DIALER_HTTP__MAX_BUFFERED_BYTES": str(4 * 1024 * 1024),
            "DIALER_HTTP__BODY_TIMEOUT_SECONDS": "2",
            "DIALER_HTTP__HEADER_TIMEOUT_SECONDS": "2",
        },
    )
    head = (
        b"POST /twilio/status HTTP/1.1\r\nHost: dialer\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 65536\r\n\r\n"
    )
    with daemons(daemon):
        await daemon.start()
        process = psutil.Process(daemon.pid)
        await asyncio.sleep(0.5)
        before = process.memory_info().rss
        flood = await _flood(daemon.port, 1500, head + b"CallSid=" + b"A" * 60_000)
        try:
            await asyncio.sleep(0.5)
            grown = process.memory_info().rss - before
            assert grown < 40 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
            assert await _closed_by_server(flood, within=8.0) == len(flood)
        finally:
            _release(flood)
        status, _ = await _get(f"{daemon.url}/healthz")
        assert status == 200
        async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as response:
            metrics = await response.text()
        buffered = next(
            float(line.split()[1]) for line in metrics.splitlines() if line.startswith("dialer_http_buffered_bytes ")
        )
        assert buffered < 1024  # the scrape's own request head, nothing of the flood
        assert 'dialer_http_connections_closed_total{reason="memory_budget"}' in metrics
