"""The embedded PostgreSQL is shared by every dialer process on one data_dir: a CLI
that exits never stops it under a running daemon, and the last process out stops it
(real processes, as an operator runs them)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from dialer.embedded import SYSTEM_USER, allow_traverse
from tests.conftest import PgServer
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import daemon_env, free_port, server_dir, wait_for


def _server_up(data_dir: Path) -> bool:
    state = data_dir / "embedded.json"
    if not state.exists():
        return False
    port = int(json.loads(state.read_text())["port"])
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _lock_holders(data_dir: Path) -> set[int]:
    """Pids holding a lock on the users file (Linux's /proc/locks: the shared lock
    each process using the server holds)."""
    inode = (data_dir / "embedded.users").stat().st_ino
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:
            fields.remove("->")
        if len(fields) >= 6 and fields[5].rsplit(":", 1)[-1] == str(inode):
            holders.add(int(fields[4]))
    return holders


def _url(data_dir: Path) -> str:
    state = json.loads((data_dir / "embedded.json").read_text())
    return f"postgresql://postgres:{state['password']}@127.0.0.1:{state['port']}/postgres"


def _dialer(env: dict[str, str], *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dialer", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def _exit_code(proc: subprocess.Popen[bytes], within: float = 30) -> int:
    return await asyncio.to_thread(proc.wait, within)


async def _ready(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=2)
        ) as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_a_cli_exiting_never_stops_the_server_under_the_daemon(sim: RunningSimulator) -> None:
    """`campaign status --watch` starts the embedded server; a daemon attaches to it;
    Ctrl-C on the CLI leaves the daemon ready and dialing; then a second CLI attaches,
    the daemon stops, and the server stays up until that CLI, the last one out, exits."""
    procs: list[subprocess.Popen[bytes]] = []
    with server_dir("dialer-shared-") as base:
        data_dir = base / "var"
        port = free_port()
        env = daemon_env("", sim.url, port, tick_seconds=0.2)
        env["DIALER_DATABASE__DATA_DIR"] = str(data_dir)
        try:
            migrate = _dialer(env, "migrate")
            assert await _exit_code(migrate, 120) == 0
            assert not _server_up(data_dir), "migrate, the only user, stops the server it started"

            watcher = _dialer(env, "campaign", "status", "--watch")
            procs.append(watcher)
            await wait_for(lambda: asyncio.to_thread(_server_up, data_dir), 60, "the CLI to start the server")
            daemon = _dialer(env, "run")
            procs.append(daemon)
            await wait_for(lambda: _ready(port), 60, "the daemon, attached to the CLI's server", interval=0.1)

            watcher.send_signal(signal.SIGINT)
            assert await _exit_code(watcher) == 0
            for _ in range(5):  # the daemon stays ready once the CLI is gone
                assert await _ready(port)
                await asyncio.sleep(0.2)
            conn = await asyncpg.connect(_url(data_dir))
            try:
                cid = await make_campaign(conn, status="active", max_retries=0)
                await add_contacts(conn, cid, [madrid_number(1)])

                async def completed() -> bool:
                    return str(await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid)) == "completed"

                await wait_for(completed, 30, "the daemon to run a campaign after the CLI exited")
            finally:
                await conn.close()

            late = _dialer(env, "campaign", "status", "--watch")
            procs.append(late)

            async def attached() -> bool:
                return late.pid in _lock_holders(data_dir)

            await wait_for(attached, 30, "the second CLI to use the server")
            daemon.send_signal(signal.SIGTERM)
            assert await _exit_code(daemon) == 0
            assert _server_up(data_dir), "the daemon stopped the server a CLI still uses"
            late.send_signal(signal.SIGINT)
            assert await _exit_code(late) == 0
            assert not _server_up(data_dir), "the last one out stops the server"
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            if _server_up(data_dir):  # a failed run leaves no server behind
                from dialer.embedded import EmbeddedPostgres

                leftover = EmbeddedPostgres(data_dir)
                leftover.start()
                leftover.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root process runs the server as another user")
def test_only_directories_the_server_user_cannot_search_are_opened(pg_server: PgServer) -> None:
    """Run as root, the server's user needs search permission down to its data: a
    directory that denies it gets the one bit of the class that user falls in there;
    one its group may search, one anyone may search, and the data directory itself
    (the server user's own) are left as they are."""
    account = pwd.getpwnam(SYSTEM_USER)  # created by the session's server when run as root
    with server_dir("dialer-traverse-") as base:
        private = base / "private"
        grouped = private / "grouped"
        public = grouped / "public"
        data = public / "data"
        data.mkdir(parents=True)
        private.chmod(0o700)
        os.chown(grouped, 0, account.pw_gid)
        grouped.chmod(0o710)
        public.chmod(0o755)
        os.chown(data, account.pw_uid, account.pw_gid)
        data.chmod(0o700)
        assert allow_traverse(data, SYSTEM_USER) == [private]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (private, grouped, public, data)}
        assert modes == {"private": 0o701, "grouped": 0o710, "public": 0o755, "data": 0o700}
        assert allow_traverse(data, SYSTEM_USER) == []  # nothing more the second time
