"""The console's listener: the app served on its own host and port, with its live hub
running and fed by the daemon's LISTEN connection, and a small database pool of its
own (docs/console.md#where-it-runs). `run_console` is what `dialer run` enters."""

from __future__ import annotations

import asyncio
import errno
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import web

from dialer import database
from dialer.config import ConsoleSettings, Settings
from dialer.console import views
from dialer.console.app import HANDLERS_KEY, create_app
from dialer.console.live import LiveHub
from dialer.errors import StartupError
from dialer.http_limits import HttpGuard, default_guard
from dialer.listener import Listener
from dialer.store.console import ConsoleStore

log = structlog.get_logger(__name__)

@dataclass
class RunningConsole:
    """A console being served: its URL, and its hub (the listener feeds it)."""

    url: str
    hub: LiveHub
    runner: web.AppRunner


@asynccontextmanager
async def serve(
    app: web.Application, settings: ConsoleSettings, guard: HttpGuard | None = None
) -> AsyncIterator[RunningConsole]:
    """Serve the app on the console's own host and port under the process's HTTP guard
    (`dialer/http_limits.py`: the connection cap and memory budget are process-wide,
    so a hundred open tabs cannot starve the callback port of descriptors), with its
    live hub running; everything stops on exit (open live streams end first, so
    nothing waits on them)."""
    handlers = app[HANDLERS_KEY]
    try:
        # A browser that goes away cancels its handler: live streams never linger.
        runner = await (guard or default_guard()).serve(
            app, settings.host, settings.port, shutdown_timeout=2.0, handler_cancellation=True
        )
    except OSError as exc:
        # The same words as the daemon's other listeners (service.py), naming the setting.
        in_use = exc.errno == errno.EADDRINUSE
        reason = "the port is already in use" if in_use else exc.strerror or str(exc)
        raise StartupError(
            f"console.port: cannot listen on {settings.host}:{settings.port}: {reason} "
            "(set another console.port, or console.enabled = false)"
        ) from exc
    port = views.bound_port(runner)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = settings.public_url or f"http://{host}:{port}"
    hub_task = asyncio.create_task(handlers.hub.run(), name="console_hub")
    log.info("console_started", url=url, sign_in=handlers.gate.credentials.required)
    try:
        yield RunningConsole(url=url, hub=handlers.hub, runner=runner)
    finally:
        handlers.hub.close()
        await hub_task
        await runner.cleanup()


LISTEN_CHANNELS: Final = ("dialer_campaign", "dialer_contacts", "dialer_call")
CONSOLE_POOL_SIZE: Final = 3  # snapshot passes, page loads and an upload at once


@asynccontextmanager
async def run_console(
    settings: Settings, db_url: str, listener: Listener, instance_id: uuid.UUID, guard: HttpGuard
) -> AsyncIterator[RunningConsole]:
    """The console of one `dialer run`: a small pool of its own (a busy page never
    takes a connection the engine waits for), its hub fed by the daemon's existing
    LISTEN connection (no second listener), its own host and port."""
    pool_settings = settings.database.model_copy(
        update={"pool_min_size": 1, "pool_max_size": CONSOLE_POOL_SIZE}
    )
    pool = await database.create_pool(db_url, pool_settings, application_name=database.APP_CONSOLE)
    try:
        store = ConsoleStore(
            pool,
            default_timezone=settings.dialer.default_timezone,
            instance_timeout_seconds=settings.dialer.instance_timeout_seconds,
        )
        app = create_app(settings.console, store, instance_id=instance_id, port=settings.console.port)
        hub = app[HANDLERS_KEY].hub
        for channel in LISTEN_CHANNELS:
            listener.add_handler(channel, hub.notify)
        async with serve(app, settings.console, guard) as running:
            yield running
    finally:
        await pool.close()
