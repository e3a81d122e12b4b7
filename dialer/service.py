"""The one place that wires the daemon together (`dialer run`): database pool,
migrations, store, carrier (and the in-process simulator), webhook listener, LISTEN
connection, call pool and scheduler; systemd notifications; graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import SecretStr

from dialer import database, http_limits, migrate, twiml, webhooks
from dialer.carrier import DialRequest
from dialer.carrier.simulator import (
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    RunningSimulator,
    start_simulator,
)
from dialer.carrier.twilio import TwilioCarrier
from dialer.config import Settings, TwilioSettings
from dialer.console import server as console
from dialer.errors import DatabaseUnavailable
from dialer.listener import Listener
from dialer.metrics import Metrics
from dialer.models import ClaimedCall
from dialer.pacing import TokenBucket
from dialer.pool import CallPool
from dialer.scheduler import Scheduler
from dialer.store.lifecycle import Clock, LifecycleStore, utcnow
from dialer.systemd import SystemdNotifier

log = structlog.get_logger(__name__)

TWILIO_API = "https://api.twilio.com"
READY_TIMEOUT = 30.0  # seconds to get the first LISTEN in place at start
RESTART_DELAY = 1.0  # seconds before a crashed background loop is restarted


class Daemon:
    """One dialer instance. `await start()`, then `await stop()`; or `run_until()`."""

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
        self.simulator: RunningSimulator | None = None
        self._db: database.Pool | None = None
        self._carrier: TwilioCarrier | None = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._console_context: contextlib.AbstractAsyncContextManager[console.RunningConsole] | None = None
        self.console: console.RunningConsole | None = None
        self._scheduler_stop = asyncio.Event()
        self.store: LifecycleStore
        self.pool: CallPool
        self.scheduler: Scheduler
        self.listener: Listener

    # ---------------------------------------------------------------- start

    async def start(self) -> None:
        """Bring every part up; READY=1 once the database, LISTEN and HTTP are up."""
        s = self.settings
        database.refuse_pooled_listen(self.listen_url, from_listen_url=self.listen_url != self.db_url)
        async with database.connection(self.db_url, s.database) as conn:
            applied = await migrate.migrate(conn)
            if applied:
                log.info("migrations_applied", files=[m.path.name for m in applied])
        self._db = await database.create_pool(self.db_url, s.database)
        twilio_settings = await self._carrier_settings()
        self.store = LifecycleStore(
            self._db,
            instance_id=self.instance_id,
            default_timezone=s.dialer.default_timezone,
            default_from_number=s.twilio.from_number,
            validate_template=twiml.validate_template,
            clock=self.clock,
        )
        await self.store.register_instance()
        self._carrier = await TwilioCarrier.create(twilio_settings)
        bucket = TokenBucket(s.dialer.calls_per_second, s.dialer.bucket_size)
        self.pool = CallPool(
            store=self.store,
            carrier=self._carrier,
            bucket=bucket,
            metrics=self.metrics,
            build_request=self._build_request,
            max_concurrent_calls=s.dialer.max_concurrent_calls,
            reconcile_after_seconds=s.dialer.reconcile_after_seconds,
            on_slot_freed=self._slot_freed,
        )
        self.scheduler = Scheduler(
            store=self.store,
            pool=self.pool,
            bucket=bucket,
            metrics=self.metrics,
            tick_seconds=s.dialer.tick_seconds,
            instance_timeout_seconds=s.dialer.instance_timeout_seconds,
            watchdog=self.notifier.watchdog,
        )
        self.listener = Listener(
            self.listen_url,
            s.database,
            {
                "dialer_campaign": self.scheduler.on_campaign_notification,
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
                render_twiml=self._render_twiml,
                intercept=self.pool.intercept,
            ),
            with_metrics=s.http.metrics_port is None,
        )
        guard = http_limits.guard_for(s, self.metrics)  # one for every listener: the fd cap is per process
        self._runner = await webhooks.serve(app, s.http.host, s.http.port, guard)
        if (port := s.http.metrics_port) is not None:
            metrics = webhooks.create_metrics_app(self.metrics)
            self._metrics_runner = await webhooks.serve(metrics, s.http.metrics_host, port, guard)
        if s.console.enabled:  # its own listener and pool; fed by ours (docs/console.md)
            context = console.run_console(s, self.db_url, self.listener, self.instance_id)
            self.console = await context.__aenter__()
            self._console_context = context
        self._spawn("listener", self.listener.run)
        if not await self.listener.wait_connected(READY_TIMEOUT):
            log.warning("listen_not_ready", waited_seconds=READY_TIMEOUT)
        # After a restart every live call we inherit is fetched at once: its
        # callbacks may have arrived while nothing was listening.
        for call in await self.store.adopt_orphans(s.dialer.instance_timeout_seconds):
            self.pool.resume(call)
        self._spawn("scheduler", lambda: self.scheduler.run(self._scheduler_stop))
        self.notifier.ready(status="dialing")
        log.info(
            "daemon_started",
            instance_id=str(self.instance_id),
            http=f"{s.http.host}:{self.http_port}",
            carrier=s.carrier.kind,
        )

    async def _carrier_settings(self) -> TwilioSettings:
        """Twilio, or the simulator: in-process unless api_base_url points elsewhere."""
        s = self.settings
        if s.carrier.kind != "simulator":
            return s.twilio
        account = s.twilio.account_sid or SIMULATOR_ACCOUNT_SID
        token = s.twilio.auth_token.get_secret_value() or SIMULATOR_AUTH_TOKEN
        base = s.twilio.api_base_url
        if base == TWILIO_API:
            self.simulator = await start_simulator(s.simulator, account_sid=account, auth_token=token)
            base = self.simulator.url
        return s.twilio.model_copy(
            update={"account_sid": account, "auth_token": SecretStr(token), "api_base_url": base}
        )

    @property
    def http_port(self) -> int:
        """The port the webhook listener is bound to."""
        return webhooks.bound_port(self._runner) if self._runner else self.settings.http.port

    def _slot_freed(self) -> None:
        self.scheduler.wake()

    async def _on_listen_connected(self) -> None:
        # Notifications sent while LISTEN was down are lost: look again at everything.
        self.scheduler.wake(housekeeping=True)
        await self.pool.refresh()

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, factory), name=name))

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Keep a background loop alive: a crash is logged and the loop restarted."""
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background_task_crashed", task=name)
                await asyncio.sleep(RESTART_DELAY)

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

    def _build_request(self, call: ClaimedCall) -> DialRequest:
        s = self.settings
        doc = twiml.render_twiml(
            call.script_template, call.contact, voice=s.twilio.voice, language=s.twilio.language
        )
        query = f"?call_id={call.id}"
        inline = twiml.fits_inline(doc)
        return DialRequest(
            to=call.contact.phone_number,
            from_=call.from_number,
            status_callback_url=f"{s.http.public_url}/twilio/status{query}",
            twiml=doc if inline else None,
            twiml_url=None if inline else f"{s.http.public_url}/twilio/twiml{query}",
            timeout_seconds=call.ring_timeout_seconds,
            time_limit_seconds=call.time_limit_seconds,
            machine_detection=call.machine_detection,
            record=call.record_calls,
            recording_callback_url=(
                f"{s.http.public_url}/twilio/recording{query}" if call.record_calls else None
            ),
        )

    async def _render_twiml(self, call_id: uuid.UUID) -> str | None:
        found = await self.store.call_for_twiml(call_id)
        if found is None:
            return None
        template, contact = found
        s = self.settings
        return twiml.render_twiml(template, contact, voice=s.twilio.voice, language=s.twilio.language)

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
        with contextlib.suppress(Exception):
            await self.store.return_unstarted()
        left = await self.pool.drain(drain)
        if left:
            log.warning("drain_timeout", unfinished_calls=left)
        await self.close()

    async def close(self) -> None:
        """Tear everything down without draining (second signal, or after drain)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self.store.return_unstarted()
                await self.store.mark_stopped()
        if self._console_context is not None:
            await self._console_context.__aexit__(None, None, None)
            self._console_context = self.console = None
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._metrics_runner = None
        if self._carrier is not None:
            await self._carrier.close()
            self._carrier = None
        if self.simulator is not None:
            await self.simulator.stop()
            self.simulator = None
        if self._db is not None:
            await self._db.close()
            self._db = None
        log.info("daemon_stopped", instance_id=str(self.instance_id))


async def run_daemon(settings: Settings) -> int:
    """`dialer run`: until SIGTERM/SIGINT; a second signal skips the drain."""
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
        await daemon.start()
        try:
            await stop.wait()
            drain = asyncio.create_task(daemon.stop())
            hurry = asyncio.create_task(urgent.wait())
            await asyncio.wait({drain, hurry}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():
                log.warning("second_signal_exit_now")
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
                await daemon.close()
            hurry.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(run_daemon(settings))


def register_cli(sub: Any) -> None:
    """Add `dialer run`."""
    p = sub.add_parser("run", help="run the daemon (scheduler, call pool, webhook listener)")
    p.set_defaults(handler=_run)
