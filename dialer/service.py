"""The one place that wires the daemon together (`dialer run`): database pool,
migrations, store, carrier (and the in-process simulator), webhook listener, LISTEN
connection, call pool and scheduler; systemd notifications; graceful shutdown.

Every resource is registered on one `AsyncExitStack` the moment it opens, so
`close()` releases exactly what was opened, in reverse order, whether start-up
finished or failed half-way (a busy HTTP port)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import SecretStr

from dialer import database, http_limits, migrate, twiml, webhooks
from dialer.carrier.simulator import (
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    RunningSimulator,
    start_simulator,
)
from dialer.carrier.twilio import TwilioCarrier
from dialer.config import Settings, TwilioSettings
from dialer.console import server as console
from dialer.errors import DatabaseUnavailable, StartupError
from dialer.listener import Listener
from dialer.metrics import Metrics
from dialer.pacing import SharedPacer
from dialer.pool import CallPool
from dialer.scheduler import Scheduler
from dialer.store.lifecycle import Clock, LifecycleStore, utcnow
from dialer.supervisor import Supervisor
from dialer.systemd import SystemdNotifier

log = structlog.get_logger(__name__)

TWILIO_API = "https://api.twilio.com"
READY_TIMEOUT = 30.0  # seconds to get the first LISTEN in place at start


class Daemon:
    """One dialer instance. `await start()`, then `await stop()` (drain) or `close()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        db_url: str,
        listen_url: str | None = None,
        clock: Clock = utcnow,
        notifier: SystemdNotifier | None = None,
        instance_id: uuid.UUID | None = None,
    ) -> None:
        self.settings = settings
        self.db_url = db_url
        self.listen_url = listen_url or db_url
        self.clock = clock
        self.notifier = notifier or SystemdNotifier.from_env({})
        self.instance_id = instance_id or uuid.uuid4()
        self.metrics = Metrics()
        self.supervisor = Supervisor(self.metrics)
        self.simulator: RunningSimulator | None = None
        self._db: database.Pool | None = None
        self._runner: web.AppRunner | None = None
        self._resources = contextlib.AsyncExitStack()
        self._started = False
        self.console: console.RunningConsole | None = None
        self._scheduler_stop = asyncio.Event()
        self.store: LifecycleStore
        self.pool: CallPool
        self.scheduler: Scheduler
        self.listener: Listener

    # ---------------------------------------------------------------- start

    async def start(self) -> None:
        """Bring every part up; READY=1 once the database, LISTEN and HTTP are up. A
        failure half-way closes what was opened and raises (StartupError for a
        listener that cannot bind, naming the port)."""
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> None:
        s = self.settings
        database.refuse_pooled_listen(self.listen_url, from_listen_url=self.listen_url != self.db_url)
        async with database.connection(self.db_url, s.database, application_name=database.APP_DAEMON) as conn:
            applied = await migrate.migrate(conn)
            if applied:
                log.info("migrations_applied", files=[m.path.name for m in applied])
        self._db = db = await database.create_pool(
            self.db_url, s.database, application_name=database.APP_DAEMON
        )
        self._on_close("database_pool", db.close)
        twilio_settings = await self._carrier_settings()
        self.store = LifecycleStore(
            db,
            instance_id=self.instance_id,
            default_timezone=s.dialer.default_timezone,
            default_from_number=s.twilio.from_number,
            validate_template=twiml.validate_template,
            clock=self.clock,
        )
        await self.store.register_instance(s.dialer.calls_per_second)
        self._on_close("instance", self._deregister)
        carrier = await TwilioCarrier.create(twilio_settings)
        self._on_close("carrier", carrier.close)
        requests = twiml.CallRequests(
            public_url=s.http.public_url,
            voice=s.twilio.voice,
            language=s.twilio.language,
            lookup=self.store.call_for_twiml,
            record_key=self.store.apply_key,
        )
        pacer = SharedPacer(
            self.store,
            rate=s.dialer.calls_per_second,
            bucket_size=s.dialer.bucket_size,
            instance_timeout_seconds=s.dialer.instance_timeout_seconds,
            metrics=self.metrics,
        )
        self._on_close("pacer", pacer.close)  # a grant in flight, after the calls that wait for it
        self.pool = CallPool(
            store=self.store,
            carrier=carrier,
            pacer=pacer,
            metrics=self.metrics,
            build_request=requests.build,
            max_concurrent_calls=s.dialer.max_concurrent_calls,
            reconcile_after_seconds=s.dialer.reconcile_after_seconds,
            on_slot_freed=self._slot_freed,
        )
        self.scheduler = Scheduler(
            store=self.store,
            pool=self.pool,
            pacer=pacer,
            metrics=self.metrics,
            tick_seconds=s.dialer.tick_seconds,
            instance_timeout_seconds=s.dialer.instance_timeout_seconds,
            watchdog=self.notifier.watchdog,
        )
        self.listener = Listener(
            self.listen_url,
            s.database,
            {
                "dialer_campaign": self._on_campaign_notification,
                "dialer_contacts": self.scheduler.on_campaign_notification,
                "dialer_call": self.pool.on_call_notification,
            },
            on_connected=self._on_listen_connected,
        )
        app = webhooks.create_app(
            webhooks.WebhookDeps(
                store=self.store,
                auth_token=twilio_settings.auth_token.get_secret_value(),
                public_url=s.http.public_url,
                metrics=self.metrics,
                max_body_bytes=s.http.max_body_bytes,
                is_ready=self.is_ready,
                render_twiml=requests.document,
                answer_key=requests.answer_key,
                intercept=self.pool.intercept,
                readiness_detail=self.supervisor.detail,
            ),
            with_metrics=s.http.metrics_port is None,
        )
        guard = http_limits.guard_for(s, self.metrics)  # one for every listener: the fd cap is per process
        self._runner = runner = await self._serve(app, "http.port", s.http.host, s.http.port, guard)
        self._on_close("http", runner.cleanup)
        if (port := s.http.metrics_port) is not None:
            metrics = webhooks.create_metrics_app(self.metrics)
            metrics_runner = await self._serve(metrics, "http.metrics_port", s.http.metrics_host, port, guard)
            self._on_close("metrics_http", metrics_runner.cleanup)
        # Call coroutines end before the HTTP listener and the pool they use: a
        # close without drain leaves their calls live in the database, for the next
        # instance to adopt.
        self._on_close("calls", self.pool.cancel_all)
        if s.console.enabled:  # its own listener and pool; fed by ours (docs/console.md)
            context = console.run_console(s, self.db_url, self.listener, self.instance_id, guard)
            self.console = await context.__aenter__()
            self._on_close("console", lambda: context.__aexit__(None, None, None))
        self._spawn("listener", self.listener.run)
        if not await self.listener.wait_connected(READY_TIMEOUT):
            log.warning("listen_not_ready", waited_seconds=READY_TIMEOUT)
        # After a restart every live call we inherit is fetched at once: its
        # callbacks may have arrived while nothing was listening.
        for call in await self.store.adopt_orphans(s.dialer.instance_timeout_seconds):
            self.pool.resume(call)
        self._spawn("scheduler", lambda: self.scheduler.run(self._scheduler_stop))
        self.notifier.ready(status="dialing")
        self._started = True
        log.info(
            "daemon_started",
            instance_id=str(self.instance_id),
            http=f"{s.http.host}:{self.http_port}",
            carrier=s.carrier.kind,
        )

    async def _serve(
        self, app: web.Application, key: str, host: str, port: int, guard: http_limits.HttpGuard
    ) -> web.AppRunner:
        """One HTTP listener, or a StartupError naming the setting (`key`) and the
        address it could not take."""
        try:
            return await webhooks.serve(app, host, port, guard)
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            reason = "the port is already in use" if in_use else exc.strerror or str(exc)
            raise StartupError(f"{key}: cannot listen on {host}:{port}: {reason}") from exc

    async def _carrier_settings(self) -> TwilioSettings:
        """Twilio, or the simulator: in-process unless api_base_url points elsewhere."""
        s = self.settings
        if s.carrier.kind != "simulator":
            return s.twilio
        account = s.twilio.account_sid or SIMULATOR_ACCOUNT_SID
        token = s.twilio.auth_token.get_secret_value() or SIMULATOR_AUTH_TOKEN
        base = s.twilio.api_base_url
        if base == TWILIO_API:
            simulator = await start_simulator(s.simulator, account_sid=account, auth_token=token)
            self._on_close("simulator", simulator.stop)
            self.simulator = simulator
            base = simulator.url
        return s.twilio.model_copy(
            update={"account_sid": account, "auth_token": SecretStr(token), "api_base_url": base}
        )

    def _on_close(self, resource: str, close: Callable[[], Awaitable[object]]) -> None:
        """Register how to release a resource just opened. A failing release is
        logged and the others still run."""

        async def release() -> None:
            try:
                await close()
            except Exception:
                log.exception("close_failed", resource=resource)

        self._resources.push_async_callback(release)

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        task = self.supervisor.spawn(name, factory)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._resources.push_async_callback(cancel)

    async def _deregister(self) -> None:
        """Hand back never-sent claims and tell other instances this one is gone."""
        await self._return_unstarted()
        await self.store.mark_stopped()

    async def _return_unstarted(self) -> None:
        try:
            returned = await self.store.return_unstarted()
        except DatabaseUnavailable as exc:
            # The next instance's rescue hands them back instead.
            log.warning("return_unstarted_failed", error=str(exc))
            return
        if returned:
            log.info("unstarted_calls_returned", count=returned)

    @property
    def http_port(self) -> int:
        """The port the webhook listener is bound to."""
        return webhooks.bound_port(self._runner) if self._runner else self.settings.http.port

    def _slot_freed(self) -> None:
        self.scheduler.wake()

    def _on_campaign_notification(self, payload: str) -> None:
        # The pool first: calls waiting for their dial slot learn of a pause at once.
        self.pool.on_campaign_notification(payload)
        self.scheduler.on_campaign_notification(payload)

    async def _on_listen_connected(self) -> None:
        # Notifications sent while LISTEN was down are lost: look again at everything.
        self.scheduler.wake(housekeeping=True)
        await self.pool.refresh()

    async def is_ready(self) -> bool:
        """Ready while the database answers and the LISTEN connection is up."""
        if self._db is None or not self.listener.connected:
            return False
        try:
            async with asyncio.timeout(2.0):
                await self.store.ping()
        except (DatabaseUnavailable, TimeoutError):
            return False
        return True

    # ----------------------------------------------------------------- stop

    async def stop(self, drain_seconds: float | None = None) -> None:
        """SIGTERM: stop claiming, hand back claimed-but-undialed calls, keep serving
        webhooks while live calls finish (up to drain_seconds), then close."""
        drain = self.settings.dialer.drain_seconds if drain_seconds is None else drain_seconds
        self.notifier.stopping(status="draining")
        log.info("daemon_stopping", live_calls=len(self.pool), drain_seconds=drain)
        self._scheduler_stop.set()
        self.scheduler.wake()
        self.pool.stop_dialing()
        await self._return_unstarted()
        left = await self.pool.drain(drain)
        if left:
            log.warning("drain_timeout", unfinished_calls=left)
        await self.close()

    async def close(self) -> None:
        """Release everything opened so far, newest first, without draining (second
        signal, after the drain, or a start that failed). Safe to call twice."""
        resources, self._resources = self._resources, contextlib.AsyncExitStack()
        await resources.aclose()
        self._runner = None
        self.console = None
        self._db = None
        self.simulator = None
        if self._started:
            self._started = False
            log.info("daemon_stopped", instance_id=str(self.instance_id))


async def run_daemon(settings: Settings) -> int:
    """`dialer run`: until SIGTERM/SIGINT; a second signal skips the drain. A start
    that fails raises (the CLI prints its one line and exits 1) after closing what
    it had opened."""
    notifier = SystemdNotifier.from_env()
    with database.database_endpoints(settings.database) as endpoints:
        daemon = Daemon(settings, db_url=endpoints.url, listen_url=endpoints.listen_url, notifier=notifier)
        stop = asyncio.Event()
        urgent = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                urgent.set()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await daemon.start()
            await stop.wait()
            drain = asyncio.create_task(daemon.stop())
            hurry = asyncio.create_task(urgent.wait())
            await asyncio.wait({drain, hurry}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():
                log.warning("second_signal_exit_now")
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
            hurry.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await daemon.close()
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(run_daemon(settings))


def register_cli(sub: Any) -> None:
    """Add `dialer run`."""
    p = sub.add_parser("run", help="run the daemon (scheduler, call pool, webhook listener)")
    p.set_defaults(handler=_run)
