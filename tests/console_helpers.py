"""Running the operator console in tests: on its own (over a test pool, no daemon)
or inside a real daemon; an HTTP client that keeps the session cookie; the CSRF
token read from a page, as a browser's form would carry it."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg

from dialer.config import ConsoleSettings, Settings
from dialer.console.app import create_app
from dialer.console.server import RunningConsole, serve
from dialer.service import Daemon
from dialer.store.console import ConsoleStore
from tests.harness import daemon_settings, free_port

TOKEN = "operator-token-0123456789"
READ_ONLY_TOKEN = "read-only-token-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextlib.asynccontextmanager
async def console_only(pool: asyncpg.Pool, **console: Any) -> AsyncIterator[RunningConsole]:
    """The console app alone on a free loopback port, reading the test database."""
    settings = ConsoleSettings(**{"port": 0, "refresh_seconds": 0.1, **console})
    store = ConsoleStore(pool, default_timezone="UTC", instance_timeout_seconds=30.0)
    app = create_app(settings, store, instance_id=uuid.uuid4(), port=settings.port)
    async with serve(app, settings) as running:
        yield running


def with_console(settings: Settings, **console: Any) -> Settings:
    """The settings with the console on, on a free port, refreshing fast."""
    values = {"enabled": True, "port": free_port(), "refresh_seconds": 0.2, **console}
    return settings.model_copy(update={"console": ConsoleSettings(**values)})


@contextlib.asynccontextmanager
async def console_daemon(db_url: str, sim_url: str, **dialer: Any) -> AsyncIterator[Daemon]:
    """A real daemon (against the given simulator) serving its console."""
    daemon = Daemon(with_console(daemon_settings(db_url, sim_url, **dialer)), db_url=db_url)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop(drain_seconds=2)


def client() -> aiohttp.ClientSession:
    """An HTTP client that keeps cookies set by 127.0.0.1 (aiohttp drops IP cookies by default)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(http: aiohttp.ClientSession, url: str, secret: str) -> aiohttp.ClientResponse:
    """Sign in through the form, as a person would: GET the page, POST the secret with its token."""
    async with http.get(f"{url}/login") as page:
        token = csrf_of(await page.text())
    async with http.post(f"{url}/login", data={"csrf_token": token, "secret": secret}) as response:
        await response.read()
        return response


async def make_campaign(conn: asyncpg.Connection, contacts: int = 3, *, name: str = "Reminders") -> uuid.UUID:
    """A draft campaign with `contacts` contacts (valid Madrid numbers)."""
    cid: uuid.UUID = await conn.fetchval(
        "INSERT INTO campaigns (name, script_template, caller_id, max_retries, retry_delay_minutes) "
        "VALUES ($1, 'Hello {{first_name}}', '+34910000000', 0, 0) RETURNING id",
        name,
    )
    await conn.execute(
        """
        WITH ins AS (
            INSERT INTO contacts (phone_number, first_name, last_name)
            SELECT '+3491' || lpad((g + 1000 * (SELECT count(*) FROM campaigns))::text, 7, '0'),
                   'Ana', 'García ' || g
            FROM generate_series(1, $2) g
            RETURNING id
        )
        INSERT INTO campaign_contacts (campaign_id, contact_id) SELECT $1, id FROM ins
        """,
        cid,
        contacts,
    )
    return cid
