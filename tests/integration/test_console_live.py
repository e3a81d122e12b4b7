"""The console inside a real daemon: live pages fed by the daemon's own LISTEN
connection (one listener however many tabs), and its own listener."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from dialer.errors import StartupError
from dialer.service import Daemon
from tests.console_helpers import client, console_daemon, make_campaign, with_console
from tests.harness import daemon_settings, wait_for


async def _next_event(stream: aiohttp.ClientResponse, name: str, containing: str, within: float) -> str:
    """Read a server-sent-event stream until an event `name` whose data contains `containing`."""
    event, data = "", []
    async with asyncio.timeout(within):
        while True:
            line = (await stream.content.readline()).decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").removeprefix(" "))
            elif not line:
                text = "\n".join(data)
                if event == name and containing in text:
                    return text
                event, data = "", []


async def _listeners(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'LISTEN %' AND pid <> pg_backend_pid()"
        )
    )


async def test_live_pages_are_fed_by_the_daemons_one_listen_connection(
    db_url: str, sim: RunningSimulator, conn: asyncpg.Connection
) -> None:
    """Five open board streams all see a status change made in SQL, while the database
    sees exactly one LISTEN connection (the daemon's) and the console renders once per pass."""
    cid = await make_campaign(conn, 5)
    async with console_daemon(db_url, sim.url) as daemon, client() as http:
        assert daemon.console is not None
        url = daemon.console.url
        streams = [await http.get(f"{url}/events/board") for _ in range(5)]
        try:
            await wait_for(lambda: _ready(daemon, 5), 5, "five live subscribers")
            renders_before = daemon.console.hub.renders
            started = time.monotonic()
            # A draft cannot be paused (docs/campaigns.md#lifecycle): started and paused
            # in one transaction, the board hears both at commit and ends on paused.
            async with conn.transaction():
                await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
                await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", cid)
            pages = await asyncio.gather(*(_next_event(s, "board", "⏸ paused", 10) for s in streams))
            elapsed = time.monotonic() - started
            assert all(str(cid) in page for page in pages)
            # Three LISTEN statements (one per channel) on one connection: one backend.
            # Sampled: the listener's liveness probe (SELECT 1) briefly replaces its
            # LISTEN as the backend's last query, so one sample may see none.
            seen: list[int] = []
            for _ in range(10):
                seen.append(await _listeners(conn))
                await asyncio.sleep(0.05)
            assert max(seen) == 1, seen
            passes = daemon.console.hub.renders - renders_before
            assert passes <= elapsed / 0.2 + 2  # one render per pass, not one per client
        finally:
            for s in streams:
                s.close()


async def _ready(daemon: Daemon, clients: int) -> bool:
    assert daemon.console is not None
    return daemon.console.hub.clients >= clients


async def test_campaign_stream_sends_counters_and_status_changes(
    db_url: str, sim: RunningSimulator, conn: asyncpg.Connection
) -> None:
    """A campaign page's stream carries the live block as the campaign runs, and a
    `status` event when the status changes (the page then refetches its buttons)."""
    cid = await make_campaign(conn, 20)
    async with console_daemon(db_url, sim.url) as daemon, client() as http:
        assert daemon.console is not None
        stream = await http.get(f"{daemon.console.url}/events/campaigns/{cid}")
        try:
            await wait_for(lambda: _ready(daemon, 1), 5, "a live subscriber")
            await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
            assert await _next_event(stream, "status", "active", 10) == "active"
            final = await _next_event(stream, "campaign", "20 / 20 contacts final", 30)
            assert "Contacts by disposition" in final and "<svg" in final
            assert await _next_event(stream, "status", "completed", 15) == "completed"
        finally:
            stream.close()


async def test_console_port_in_use_stops_the_daemon_with_one_clear_error(
    db_url: str, sim: RunningSimulator
) -> None:
    """A console port already taken is a start-up error naming the port and the fix."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon(with_console(daemon_settings(db_url, sim.url), port=port), db_url=db_url)
        with pytest.raises(StartupError, match=f"console.port: cannot listen on 127.0.0.1:{port}: the port is already in use"):
            await daemon.start()
        await daemon.close()
