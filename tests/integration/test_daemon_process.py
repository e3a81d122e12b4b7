"""`dialer run` as systemd runs it: a real process, a notify socket, signals."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from dialer.carrier.simulator import (
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    RunningSimulator,
    start_simulator,
)
from dialer.config import SimulatorSettings
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import daemon_env, free_port, wait_for
from tests.invariants import assert_attempts_match_carrier, assert_counters_true, assert_dialed_once_each


@pytest.fixture
async def slow_sim() -> AsyncIterator[RunningSimulator]:
    """A simulator whose answered calls last one to two real seconds."""
    settings = SimulatorSettings(
        answered=1, busy=0, no_answer=0, failed=0, machine=0, min_latency_ms=0, max_latency_ms=5,
        min_duration_seconds=20, max_duration_seconds=40, time_scale=0.05, seed=5,
    )
    running = await start_simulator(settings, account_sid=SIMULATOR_ACCOUNT_SID, auth_token=SIMULATOR_AUTH_TOKEN)
    yield running
    await running.stop()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemon subprocesses, killed at teardown whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def spawn(env: dict[str, str], log: Path, processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer", "run"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    processes.append(proc)
    return proc


async def _exit_code(proc: subprocess.Popen[bytes], within: float) -> int | None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        await asyncio.sleep(0.05)
    return None


async def _finished_once_each(
    conn: asyncpg.Connection, cid: object, numbers: list[str], sim: RunningSimulator, within: float
) -> None:
    """The (restarted) daemon completes the campaign; each contact was dialed exactly
    once; every carrier call is one row; counters equal the aggregates."""

    async def completed() -> bool:
        return str(await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid)) == "completed"

    await wait_for(completed, within, "the restarted daemon to complete the campaign")
    assert_dialed_once_each(sim.simulator, numbers)
    await assert_attempts_match_carrier(conn, sim.simulator.calls)
    await assert_counters_true(conn)


async def test_systemd_notifications_arrive_in_order(
    db_url: str, slow_sim: RunningSimulator, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """READY=1 once DB, LISTEN and HTTP are up (then /readyz is 200), WATCHDOG=1 from
    the scheduler loop, STOPPING=1 on SIGTERM, exit 0."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    port = free_port()
    env = daemon_env(db_url, slow_sim.url, port)
    env.update({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    proc = spawn(env, tmp_path / "daemon.log", processes)
    loop = asyncio.get_running_loop()
    messages: list[str] = []

    async def receive(until: str, within: float) -> None:
        async with asyncio.timeout(within):
            while not any(until in m for m in messages):
                messages.append((await loop.sock_recv(sock, 4096)).decode())

    try:
        await receive("READY=1", 30)
        async with aiohttp.ClientSession() as http:
            for probe in ("healthz", "readyz"):
                async with http.get(f"http://127.0.0.1:{port}/{probe}") as response:
                    assert response.status == 200, probe
        await receive("WATCHDOG=1", 10)
        proc.send_signal(signal.SIGTERM)
        await receive("STOPPING=1", 10)
        assert await _exit_code(proc, 15) == 0
    finally:
        sock.close()
    kinds = [key for m in messages for key in ("READY=1", "WATCHDOG=1", "STOPPING=1") if key in m]
    first = {k: kinds.index(k) for k in ("READY=1", "WATCHDOG=1", "STOPPING=1")}
    assert first["READY=1"] < first["WATCHDOG=1"] < first["STOPPING=1"], messages


async def test_sigterm_drains_and_a_restart_finishes_without_double_dials(
    db_url: str, conn: asyncpg.Connection, slow_sim: RunningSimulator, tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """SIGTERM mid-campaign: exit 0 within drain_seconds + 5 s, no claimed-but-undialed
    call left behind; a restarted daemon completes the campaign and no contact is
    dialed twice for one attempt."""
    cid = await make_campaign(conn, status="active", max_retries=0)
    numbers = [madrid_number(i) for i in range(40)]
    await add_contacts(conn, cid, numbers)
    env = daemon_env(db_url, slow_sim.url, free_port(), calls_per_second=8, max_concurrent_calls=6,
                     drain_seconds=10, tick_seconds=0.2)
    proc = spawn(env, tmp_path / "daemon.log", processes)

    async def some() -> bool:
        return len(slow_sim.simulator.calls) >= 10

    await wait_for(some, 30, "ten dials")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = await _exit_code(proc, 10 + 5)
    took = time.monotonic() - signalled
    print(f"\nSIGTERM to exit: {took:.2f} s")
    assert code == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    stranded = await conn.fetchval("SELECT count(*) FROM calls WHERE status = 'pending' AND dialed_at IS NULL")
    assert stranded == 0
    dialed_before = len(slow_sim.simulator.calls)
    assert dialed_before < len(numbers)

    spawn(env, tmp_path / "daemon2.log", processes)
    await _finished_once_each(conn, cid, numbers, slow_sim, within=60)


async def test_second_signal_exits_at_once_and_loses_nothing(
    db_url: str, conn: asyncpg.Connection, slow_sim: RunningSimulator, tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """A second SIGTERM skips the drain; live calls stay recorded, and the next
    daemon adopts and finishes them instead of dialing again."""
    slow_sim.simulator.settings = slow_sim.simulator.settings.model_copy(update={"time_scale": 0.15})
    cid = await make_campaign(conn, status="active", max_retries=0)
    numbers = [madrid_number(i) for i in range(12)]
    await add_contacts(conn, cid, numbers)
    env = daemon_env(db_url, slow_sim.url, free_port(), calls_per_second=20, max_concurrent_calls=6,
                     drain_seconds=60, reconcile_after_seconds=1)
    proc = spawn(env, tmp_path / "daemon.log", processes)

    async def live() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM calls WHERE status = 'in_progress'") >= 3)

    await wait_for(live, 30, "calls in progress")
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert await _exit_code(proc, 5) == 0
    print(f"\nsecond signal to exit: {time.monotonic() - signalled:.2f} s")
    assert await conn.fetchval("SELECT count(*) FROM calls WHERE status = 'in_progress'") >= 1
    spawn(env, tmp_path / "daemon2.log", processes)
    await _finished_once_each(conn, cid, numbers, slow_sim, within=90)
