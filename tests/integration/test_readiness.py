"""/readyz follows the database: 503 while PostgreSQL is down, 200 once it is back
and the LISTEN connection has reconnected. Uses a PostgreSQL of its own so the
session's server stays up for other tests."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from dialer.embedded import EmbeddedPostgres
from dialer.service import Daemon
from tests.harness import daemon_settings, server_dir, wait_for


async def _status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status
    except (aiohttp.ClientError, TimeoutError):  # no answer yet (a loaded machine): ask again
        return 0


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL for this test alone."""
    with server_dir("dialer-ready-") as base:
        server = EmbeddedPostgres(base / "pg", settings={"fsync": "off"})
        server.start()
        yield server
        server.stop()


async def test_readyz_is_503_while_postgres_is_down_and_200_after(own_server: EmbeddedPostgres) -> None:
    """Stop the server under a running daemon, then start it again."""
    server = own_server
    url = server.url
    daemon = Daemon(daemon_settings(url), db_url=url)
    await daemon.start()
    ready = f"http://127.0.0.1:{daemon.http_port}/readyz"
    healthy = f"http://127.0.0.1:{daemon.http_port}/healthz"
    try:
        assert await _status(ready) == 200
        server.stop()

        async def down() -> bool:
            return await _status(ready) == 503

        await wait_for(down, 15, "/readyz to turn 503")
        assert await _status(healthy) == 200
        server.start()

        async def up() -> bool:
            return await _status(ready) == 200

        await wait_for(up, 30, "/readyz to turn 200 again", interval=0.2)
        assert daemon.listener.reconnects >= 1
    finally:
        await daemon.stop(drain_seconds=0)
