"""Connections: the asyncpg pool for work, single connections for LISTEN and the CLI,
and the embedded server when no URL is configured.

This is the connector, and with `dialer/store/` (and `listener.py`, `migrate.py`)
the only code that knows asyncpg. Whatever asyncpg (or the socket under it) raises
when the database goes away is defined once here, `DATABASE_ERRORS`, and turned
into one `DatabaseUnavailable` at the boundary: every store method is wrapped by
`translate_errors`, and `connection()` translates what its body raises. The rest of
the daemon catches `DatabaseUnavailable` only (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from dialer.config import DatabaseSettings, postgres_url_problem
from dialer.embedded import EmbeddedPostgres
from dialer.errors import ConfigError, DatabaseUnavailable

P = ParamSpec("P")
T = TypeVar("T")

# The names the rest of the package uses for asyncpg's objects (types only: importing
# asyncpg itself is the boundary's business).
Connection = asyncpg.Connection
Pool = asyncpg.Pool
Record = asyncpg.Record

# "The database went away", as asyncpg and the socket under it say it: a server
# error (restart, pg_terminate_backend, serialization, statement timeout), a client
# state error (pool closing, a connection cut mid-operation and then reused:
# InternalClientError), the socket (OSError), or a timeout (acquire, command). The
# one definition: the boundary turns each into DatabaseUnavailable.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# asyncpg's own errors only, for code that runs more than database calls (a CLI
# command reading a file): an OSError there is not the database's.
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
_NO_SCHEMA = (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError)


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    """The DatabaseUnavailable that stands for `exc` (raise it `from exc`)."""
    if isinstance(exc, _NO_SCHEMA):
        return DatabaseUnavailable(f"the database has no dialer schema: run `dialer migrate` first ({exc})")
    detail = str(exc) or type(exc).__name__
    return DatabaseUnavailable(f"database error: {detail}")


def translate_errors(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap a store coroutine so that a database failure leaves it as DatabaseUnavailable.
    The cost per call is one try/except and one coroutine frame; the store's hot-path
    methods are one statement each, whose round trip is a thousand times that."""

    @functools.wraps(fn)
    async def boundary(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except DATABASE_ERRORS as exc:
            raise unavailable(exc) from exc

    boundary.translates_errors = True  # type: ignore[attr-defined]  # checked by tests
    return boundary


# Every session speaks UTC: the data model's `timestamp` columns (docs/schema.md) hold UTC wall-clock time.
SERVER_SETTINGS = {"timezone": "UTC", "application_name": "dialer"}
# Each kind of session names itself (application_name), so pg_stat_activity and the
# campaign status history (docs/campaigns.md#history) say which part of dialer wrote.
APP_DAEMON = "dialer run"
APP_CLI = "dialer cli"
APP_CONSOLE = "dialer console"
APP_MIGRATE = "dialer migrate"
APP_DEMO = "dialer demo"


def _server_settings(application_name: str) -> dict[str, str]:
    return {**SERVER_SETTINGS, "application_name": application_name}
# Supabase's Supavisor (and the usual PgBouncer setup there) serves transaction mode on
# 6543 and session mode on 5432; a transaction pooler hands LISTEN's session to others.
TRANSACTION_POOLER_PORT = 6543


@dataclass(frozen=True)
class Endpoints:
    """The URLs of one database: work traffic, and the LISTEN connection."""

    url: str
    listen_url: str


@contextlib.contextmanager
def database_endpoints(settings: DatabaseSettings) -> Iterator[Endpoints]:
    """Yield the URLs to use, starting the embedded server for the duration when
    `database.url` is empty."""
    url = settings.url.get_secret_value()
    listen_url = settings.listen_url.get_secret_value()
    if url:
        yield Endpoints(url=url, listen_url=listen_url or url)
        return
    server = EmbeddedPostgres(settings.data_dir)
    url = server.start()
    try:
        yield Endpoints(url=url, listen_url=listen_url or url)
    finally:
        server.stop()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(
    url: str, settings: DatabaseSettings | None = None, *, application_name: str = "dialer"
) -> asyncpg.Connection:
    """One connection (CLI commands, LISTEN, migrations), named `application_name`."""
    settings = settings or DatabaseSettings()
    _parseable(url)
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            url,
            timeout=settings.connect_timeout_seconds,
            statement_cache_size=settings.statement_cache_size,
            server_settings=_server_settings(application_name),
        )
    except DATABASE_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to {describe_url(url)}: {exc}") from exc
    await _init_connection(conn)
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without the server-side reset (RESET ALL, UNLISTEN *, CLOSE ALL,
    advisory unlock): one round trip per acquire, 4 to 5 % of the daemon's time under
    load (bench/lifecycle.py profile). Pooled work leaves no session state — advisory
    locks are transaction-scoped, LISTEN has its own connection, nothing SETs — and
    asyncpg still rolls back any open transaction before calling this."""


async def create_pool(
    url: str, settings: DatabaseSettings, *, application_name: str = "dialer"
) -> asyncpg.Pool:
    """A work pool (the daemon's, the console's), its sessions named `application_name`."""
    _parseable(url)
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.connect_timeout_seconds,
            command_timeout=settings.command_timeout_seconds,
            statement_cache_size=settings.statement_cache_size,
            server_settings=_server_settings(application_name),
            init=_init_connection,
            reset=_keep_session,
        )
    except DATABASE_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to {describe_url(url)}: {exc}") from exc
    return pool


@contextlib.asynccontextmanager
async def connection(
    url: str, settings: DatabaseSettings | None = None, *, application_name: str = "dialer"
) -> AsyncIterator[Connection]:
    """`async with connection(url) as conn:` for one-shot commands. An asyncpg error
    raised inside the block (a transaction's commit, say) leaves it as
    DatabaseUnavailable, like every store method's."""
    conn = await connect(url, settings, application_name=application_name)
    try:
        yield conn
    except _DRIVER_ERRORS as exc:
        raise unavailable(exc) from exc
    finally:
        await conn.close()


def with_database(url: str, name: str) -> str:
    """The same server's URL for another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _parseable(url: str) -> None:
    """The driver reports a URL it cannot parse with a raw ValueError quoting the
    piece it choked on, which may be part of the password: refuse first, quoting
    nothing (configured URLs were checked on load; this covers built ones)."""
    problem = postgres_url_problem(url)
    if problem:
        raise ConfigError(f"database URL {problem}")


def describe_url(url: str) -> str:
    """host:port/dbname of a URL, for messages: never the user or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a password with an unencoded '/', '?' or '#' cut the host short
        return "(an unparseable URL)"
    return f"{host}{port}{parts.path or '/'}"


async def recreate_database(admin_url: str, name: str) -> None:
    """Drop (forcing out any session) and create database `name` on the server of
    `admin_url`. For the demo's and the tests' own throwaway databases only."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {name!r}")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()


def url_ports(url: str) -> list[int]:
    """Every port a libpq-style URL names: in the netloc (also multi-host
    `h1:5432,h2:6543`) or as a `?port=` parameter."""
    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    ports: list[int] = []
    for host in hosts.split(","):
        _, sep, port = host.rpartition(":")
        if sep and port.isdigit() and not host.endswith("]"):
            ports.append(int(port))
    for value in parse_qs(parts.query).get("port", []):
        ports += [int(p) for p in value.split(",") if p.isdigit()]
    return ports


def is_transaction_pooler(url: str) -> bool:
    """Whether the URL points at a transaction-mode pooler (port 6543, Supabase's
    convention, whatever the host: pooler.supabase.com or a self-hosted PgBouncer)."""
    return TRANSACTION_POOLER_PORT in url_ports(url)


def refuse_pooled_listen(listen_url: str, *, from_listen_url: bool) -> None:
    """Stop start-up when LISTEN would go through a transaction pooler: there the
    daemon would LISTEN on a server session that is then handed to other clients and
    never hear a pause or cancel. Raises ConfigError with one line naming the key."""
    if not is_transaction_pooler(listen_url):
        return
    key = "database.listen_url" if from_listen_url else "database.url (used for LISTEN: listen_url is empty)"
    raise ConfigError(
        f"{key}: {describe_url(listen_url)} is a transaction pooler (port {TRANSACTION_POOLER_PORT}); "
        "LISTEN needs a direct or session-mode connection: set database.listen_url to one (port 5432)"
    )
