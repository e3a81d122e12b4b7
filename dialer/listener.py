"""The LISTEN connection (docs/architecture.md): a dedicated asyncpg connection, never a pooled
one, probed with `SELECT 1` under a timeout because a silently dropped network fires
no termination callback; reconnected forever with bounded backoff; after every
(re)connect the owner re-scans, since notifications sent meanwhile are lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import structlog

from dialer import database
from dialer.config import DatabaseSettings
from dialer.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)

BACKOFF_START = 0.1  # seconds
BACKOFF_MAX = 5.0  # seconds

Handler = Callable[[str], None]
# The connection is gone: what the driver raises, or the probe's own verdict.
LOST: tuple[type[BaseException], ...] = (*database.DATABASE_ERRORS, DatabaseUnavailable)


class Listener:
    """Delivers NOTIFY payloads of `channels` to their handlers, and calls
    `on_connected` after every successful (re)connect."""

    def __init__(
        self,
        url: str,
        settings: DatabaseSettings,
        channels: Mapping[str, Handler],
        on_connected: Callable[[], Awaitable[None]],
    ) -> None:
        self._url = url
        self._settings = settings
        self._channels: dict[str, list[Handler]] = {name: [handler] for name, handler in channels.items()}
        self._on_connected = on_connected
        self._connected = asyncio.Event()
        self.reconnects = 0

    def add_handler(self, channel: str, handler: Handler) -> None:
        """Another consumer of a channel (the console's live hub): every handler of a
        channel gets every payload, over the same one connection. Add before `run`."""
        self._channels.setdefault(channel, []).append(handler)

    @property
    def connected(self) -> bool:
        """True while LISTEN is in place and the last probe succeeded."""
        return self._connected.is_set()

    async def wait_connected(self, seconds: float) -> bool:
        """Wait until the first LISTEN is in place."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._connected.wait()
        return self.connected

    async def run(self) -> None:
        """Connect, listen, probe; on any failure reconnect. Runs until cancelled."""
        backoff = BACKOFF_START
        while True:
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await database.connect(self._url, self._settings, application_name=database.APP_DAEMON)
                conn.add_termination_listener(_setter(lost))
                for channel, handlers in self._channels.items():
                    await conn.add_listener(channel, _adapter(handlers))
                self._connected.set()
                backoff = BACKOFF_START
                log.info("listen_connected", channels=sorted(self._channels), reconnects=self.reconnects)
                await self._on_connected()
                await self._probe_until_lost(conn, lost)
            except LOST as exc:
                log.warning("listen_connection_lost", error=str(exc))
            finally:
                self._connected.clear()
                if conn is not None:
                    conn.terminate()
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _probe_until_lost(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        interval = self._settings.keepalive_seconds
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await lost.wait()
            if lost.is_set():
                break
            async with asyncio.timeout(interval):
                await conn.fetchval("SELECT 1")
        raise DatabaseUnavailable("LISTEN connection terminated")


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()


def _adapter(handlers: list[Handler]) -> Callable[[object, int, str, object], None]:
    def callback(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        for handler in handlers:
            try:
                handler(str(payload))
            except Exception:  # a bad payload must not kill the LISTEN connection (or the next handler)
                log.exception("notification_handler_failed", payload=payload)

    return callback
