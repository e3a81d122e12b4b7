"""A daemon that cannot start cleans up what it opened: a taken HTTP port ends
`dialer run` with exit 1 and one line naming the port, leaving no task, database
connection, simulator or embedded server behind; and a side loop that crashed and
was restarted shows in /readyz and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from dialer.errors import StartupError
from dialer.service import Daemon
from tests.conftest import StartDaemon
from tests.harness import daemon_env, daemon_settings, server_dir, wait_for


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port some other program is listening on."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        yield int(blocker.getsockname()[1])


async def _run_cli(env: dict[str, str], within: float = 90) -> tuple[int, list[str]]:
    """`python -m dialer run` to its exit: the exit code and every output line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dialer",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines()


def _human_lines(lines: list[str]) -> list[str]:
    """The lines that are not structured (JSON) log lines: what a person reads."""
    human = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            human.append(line)
    return human


async def _other_sessions(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


def _listening_ports_of_this_process() -> set[int]:
    """TCP ports this very process listens on (its own socket fds matched in /proc/net)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for row in f.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_taken_port_exits_1_with_one_line_naming_it(
    db_url: str, sim: RunningSimulator, conn: asyncpg.Connection
) -> None:
    """`dialer run` with its HTTP port taken: exit 1, one line (no traceback) naming
    http.port and the address, and no session of it left in pg_stat_activity."""
    with taken_port() as port:
        code, lines = await _run_cli(daemon_env(db_url, sim.url, port))
    assert code == 1, lines
    assert _human_lines(lines) == [
        f"error: http.port: cannot listen on 127.0.0.1:{port}: the port is already in use"
    ], lines

    async def no_sessions() -> bool:
        return await _other_sessions(conn) == 0

    await wait_for(no_sessions, 10, "the daemon's database sessions to end")


async def test_taken_port_stops_the_embedded_server_it_started(sim: RunningSimulator) -> None:
    """With no database.url the daemon starts its own PostgreSQL; a taken port still
    ends with the one line, and that server is stopped again."""
    with server_dir("dialer-test-startup-") as data_dir, taken_port() as port:
        env = daemon_env("", sim.url, port)
        env["DIALER_DATABASE__DATA_DIR"] = str(data_dir)
        code, lines = await _run_cli(env)
        assert code == 1, lines
        assert _human_lines(lines) == [
            f"error: http.port: cannot listen on 127.0.0.1:{port}: the port is already in use"
        ], lines
        assert (data_dir / "pgdata" / "PG_VERSION").exists()  # it did start one
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()


async def test_failed_start_in_process_leaves_nothing_open(db_url: str, conn: asyncpg.Connection) -> None:
    """Daemon.start failing at the HTTP listener (after the pool, the in-process
    simulator, the carrier and the instance row) raises StartupError and closes
    them all: no task, no database session, no listening socket, instance stopped."""
    settings = daemon_settings(db_url)  # no simulator URL: the daemon starts its own
    before = _listening_ports_of_this_process()
    with taken_port() as port:
        settings = settings.model_copy(
            update={"http": settings.http.model_copy(update={"port": port})}
        )
        daemon = Daemon(settings, db_url=db_url)
        with pytest.raises(StartupError, match=f"http.port: cannot listen on 127.0.0.1:{port}"):
            await daemon.start()
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()
    assert _listening_ports_of_this_process() == before

    async def no_sessions() -> bool:
        return await _other_sessions(conn) == 0

    await wait_for(no_sessions, 10, "the pool's sessions to end")
    stopped = await conn.fetchval("SELECT stopped_at IS NOT NULL FROM dialer_instances WHERE id = $1", daemon.instance_id)
    assert stopped is True
    await daemon.close()  # a second close is harmless


async def test_a_restarted_loop_shows_in_readyz_and_metrics(start_daemon: StartDaemon) -> None:
    """A side loop that crashed and was restarted: /readyz stays 200 and says so;
    dialer_loop_restarts_total{loop} counts it."""
    daemon = await start_daemon()
    daemon.supervisor.restart_delay = 0.0
    crashes = 0

    async def crashes_once() -> None:
        nonlocal crashes
        crashes += 1
        if crashes == 1:
            raise RuntimeError("boom")

    await asyncio.wait_for(daemon.supervisor.spawn("probe", crashes_once), timeout=5)
    base = f"http://127.0.0.1:{daemon.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
            body = await response.text()
        async with http.get(f"{base}/metrics") as response:
            metrics = await response.text()
    assert body.startswith("ready\n")
    [line] = [line for line in body.splitlines() if line.startswith("loop probe")]
    assert line.startswith("loop probe restarted 1 time, last ")
    assert line.endswith(": RuntimeError")
    assert 'dialer_loop_restarts_total{loop="probe"} 1.0' in metrics


def test_the_harness_finds_this_process_listeners() -> None:
    """The socket check above sees a listener this process opens, and its closing."""
    before = _listening_ports_of_this_process()
    with taken_port() as port:
        assert port in _listening_ports_of_this_process() - before
    assert port not in _listening_ports_of_this_process()

