"""Test harness: one real PostgreSQL for the session (embedded, or
$DIALER_TEST_DATABASE_URL), a template database migrated once, and a fresh database
cloned from it for every test that asks for one."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from dialer import database
from dialer.carrier.simulator import (
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    RunningSimulator,
    start_simulator,
)
from dialer.config import DatabaseSettings, SimulatorSettings
from dialer.embedded import EmbeddedPostgres
from dialer.logs import configure_logging
from dialer.migrate import migrate
from dialer.service import Daemon
from tests.harness import daemon_settings

StartDaemon = Callable[..., Awaitable[Daemon]]
# One template per pytest-xdist worker: workers sharing $DIALER_TEST_DATABASE_URL must
# not recreate each other's template under a clone in progress.
TEMPLATE = f"dialer_test_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
# Durability is not under test; these make the embedded server several times faster.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass
class PgServer:
    """The session's server: an admin URL, and the embedded handle if we own it."""

    admin_url: str
    embedded: EmbeddedPostgres | None

    def url_for(self, name: str) -> str:
        return database.with_database(self.admin_url, name)


async def _create_template(admin_url: str) -> None:
    await database.recreate_database(admin_url, TEMPLATE)
    conn = await database.connect(database.with_database(admin_url, TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    """Daemons in tests log warnings and errors only (tests that read logs
    configure their own capture)."""
    configure_logging("warning", "console", stream=sys.stderr)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """An in-process `dialer.cli.main()` points logging at the test's captured
    stderr, which closes after the test: put the process-wide set-up back."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers, root.level = handlers, level


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL for the whole session."""
    external = os.environ.get("DIALER_TEST_DATABASE_URL")
    if external:
        server = PgServer(admin_url=external, embedded=None)
        asyncio.run(_create_template(server.admin_url))
        yield server
        return
    base = Path(tempfile.mkdtemp(prefix="dialer-test-pg-"))
    base.chmod(0o755)
    embedded = EmbeddedPostgres(base / "pg", settings=FAST_SETTINGS)
    url = embedded.start()
    server = PgServer(admin_url=url, embedded=embedded)
    try:
        asyncio.run(_create_template(url))
        yield server
    finally:
        embedded.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def db_url(pg_server: PgServer) -> AsyncIterator[str]:
    """A freshly migrated database of its own for one test; dropped afterwards."""
    name = f"dialer_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    yield pg_server.url_for(name)
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the test's own database."""
    c = await database.connect(db_url)
    yield c
    await c.close()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's own database."""
    p = await database.create_pool(db_url, DatabaseSettings(pool_min_size=1, pool_max_size=10))
    yield p
    await p.close()


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """A carrier simulator on loopback with fast calls."""
    settings = SimulatorSettings(
        min_latency_ms=0, max_latency_ms=5, min_duration_seconds=1, max_duration_seconds=3,
        time_scale=0.01, seed=11,
    )
    running = await start_simulator(settings, account_sid=SIMULATOR_ACCOUNT_SID, auth_token=SIMULATOR_AUTH_TOKEN)
    yield running
    await running.stop()


@pytest.fixture
async def start_daemon(db_url: str, sim: RunningSimulator) -> AsyncIterator[StartDaemon]:
    """Start daemons against the test database and simulator; all stopped at the end."""
    daemons: list[Daemon] = []

    async def start(**dialer: Any) -> Daemon:
        daemon = Daemon(daemon_settings(db_url, sim.url, **dialer), db_url=db_url)
        await daemon.start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.stop(drain_seconds=2)
