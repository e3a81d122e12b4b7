"""Connection, time and memory limits for the daemon's HTTP listeners
(docs/operations.md#connection-and-memory-limits).

The callback port faces the Internet. Left to aiohttp's defaults, a few thousand idle
or stalled connections exhaust the process's file descriptors (the listener, the
database pool and the LISTEN connection then all stop working) or its memory. One
`HttpGuard` per process keeps every listener inside these bounds:

- a connection must deliver a complete request head within `header_timeout_seconds`
  of connecting or of its previous response (slow or absent headers, idle keep-alive);
- a request body must arrive whole within `body_timeout_seconds` (then 408);
- open connections, across every listener of the guard, stay below `max_connections`,
  itself below the file-descriptor limit with a reserve for the database, the LISTEN
  connection and the carrier. At the cap the connection idle the longest is closed to
  make room; only when every connection is busy is the new one refused;
- bytes received and not yet handled, across all connections, stay within
  `max_buffered_bytes`: past it, a connection already holding more than a callback's
  worth (`SMALL_REQUEST_BYTES`) is closed; small requests still get through;
- asyncio's "socket.accept() out of system resource" report, which it repeats for
  every queued connection on every retry, is logged at most once per interval.

Reuse: `guard.serve(app, host, port)` runs any aiohttp application under the guard's
limits (it adds the guard's middleware and starts a runner and site); every listener
of the process should share one guard so the connection cap is process-wide.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import structlog
from aiohttp import web

from dialer.config import Settings
from dialer.metrics import Metrics

__all__ = [
    "SERVER_HEADER",
    "SMALL_REQUEST_BYTES",
    "HttpGuard",
    "HttpLimits",
    "connection_cap",
    "default_guard",
    "fd_limit",
    "fd_reserve",
    "guard_for",
]

log = structlog.get_logger(__name__)

# What every answer says in its Server header: no library or version to fingerprint.
SERVER_HEADER: Final = "dialer"
# A Twilio callback (head and form) is 1-3 KB; a connection holding no more than this
# is never closed for the memory budget, so real callbacks pass during a flood.
SMALL_REQUEST_BYTES: Final = 8 * 1024
# File descriptors kept out of the connection cap whatever the configuration: log
# files, the event loop's own, the listening sockets, a LISTEN reconnect, DNS.
BASE_FD_RESERVE: Final = 64
# Never derive a cap below this, however low the limit: a daemon that can hold a
# handful of connections still answers its probes.
MIN_CONNECTIONS: Final = 16
# Operational warnings about shed connections are logged at most this often.
LOG_INTERVAL_SECONDS: Final = 10.0
ACCEPT_FAILED_MESSAGE: Final = "socket.accept() out of system resource"
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class HttpLimits:
    """The bounds one `HttpGuard` enforces (config: the `[http]` section)."""

    max_connections: int
    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    max_buffered_bytes: int = 16 * 1024 * 1024


def fd_reserve(pool_max_size: int, max_concurrent_calls: int) -> int:
    """File descriptors the daemon needs besides its HTTP connections: the database
    pool, and per live call a carrier connection (and, with the in-process simulator,
    its server side and the callback it posts back), plus a fixed margin."""
    return BASE_FD_RESERVE + pool_max_size + 4 * max_concurrent_calls


def connection_cap(configured: int, reserve: int) -> int:
    """`configured` when positive; else the soft RLIMIT_NOFILE less `reserve` (at
    least MIN_CONNECTIONS), so accept() never meets EMFILE while the database still
    has descriptors to connect with."""
    if configured > 0:
        return configured
    return max(MIN_CONNECTIONS, fd_limit() - reserve)


def fd_limit() -> int:
    """The process's soft RLIMIT_NOFILE (unlimited read as 2**20)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def guard_for(settings: Settings, metrics: Metrics | None = None) -> HttpGuard:
    """The process's one guard, from the `[http]` settings; the connection cap, unless
    configured, is the descriptor limit less `fd_reserve` for the database and calls."""
    http = settings.http
    reserve = fd_reserve(settings.database.pool_max_size, settings.dialer.max_concurrent_calls)
    cap = connection_cap(http.max_connections, reserve)
    if cap + reserve > fd_limit():
        log.warning(
            "http_max_connections_above_fd_limit", max_connections=cap, fd_limit=fd_limit(), reserve=reserve
        )
    limits = HttpLimits(
        max_connections=cap,
        header_timeout_seconds=http.header_timeout_seconds,
        body_timeout_seconds=http.body_timeout_seconds,
        max_buffered_bytes=http.max_buffered_bytes,
    )
    return HttpGuard(limits, metrics)


def default_guard() -> HttpGuard:
    """A guard with the default limits and a cap from the descriptor limit (for an
    application served on its own, e.g. in tests)."""
    return HttpGuard(HttpLimits(max_connections=connection_cap(0, fd_reserve(10, 50))))


class _Throttled:
    """A warning logged at most once per interval, with how many were folded into it."""

    def __init__(self, event: str, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.event = event
        self.interval = interval
        self._last = -interval
        self._folded = 0

    def __call__(self, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._folded += 1
            return
        log.warning(self.event, suppressed=self._folded, **fields)
        self._last, self._folded = now, 0


# asyncio runs a timer up to its clock resolution early; a deadline that close counts
# as reached.
_CLOCK_SLACK = 0.01


class _Connection:
    """What the guard knows of one open connection."""

    __slots__ = ("buffered", "busy", "idle_since", "timer", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffered = 0  # bytes received since the last request ended
        self.busy = 0  # requests being handled right now
        self.idle_since = 0.0  # loop time it last became idle (opened, or a request ended)
        self.timer: asyncio.TimerHandle | None = None  # its idle deadline, while armed


class _GuardedHandler(web.RequestHandler):
    """aiohttp's protocol, reporting to the guard; its error answers echo nothing."""

    def __init__(self, guard: HttpGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the guard, which may close another idle connection (or this one)."""
        super().connection_made(transport)
        self._guard.opened(self, transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: BaseException | None) -> None:
        """Release the connection's place and bytes."""
        self._guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count the bytes against the budget; a connection over it is closed unread."""
        if self._guard.received(self, len(data)):
            super().data_received(data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to an unparsable request quotes the offending bytes back;
        ours is the status line's phrase only."""
        response = super().handle_error(request, status, exc, message)
        if isinstance(response, web.Response):
            response.text = f"{status} {HTTPStatus(status).phrase}\n"
        response.headers["Server"] = SERVER_HEADER
        return response


class _GuardedSite(web.BaseSite):
    """A TCP site whose connections are `_GuardedHandler`s of the runner's server."""

    __slots__ = ("_factory", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._factory = factory

    @property
    def name(self) -> str:
        """The site's URL, for aiohttp's bookkeeping."""
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen, with the guarded protocol factory in place of the runner's server."""
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


class HttpGuard:
    """The limits of every HTTP listener of one process (see the module docstring)."""

    def __init__(self, limits: HttpLimits, metrics: Metrics | None = None) -> None:
        self.limits = limits
        self._connections: dict[_GuardedHandler, _Connection] = {}
        # Connections with no request in progress, the longest idle first.
        self._idle: OrderedDict[_GuardedHandler, None] = OrderedDict()
        self._buffered = 0
        self._closed_reasons: dict[str, int] = {}
        self._metrics = metrics
        self._warn_shed = _Throttled("http_connections_shed")
        self._warn_accept = _Throttled("http_accept_failed")
        self._loops: set[asyncio.AbstractEventLoop] = set()
        if metrics is not None:
            metrics.http_connections.set_function(lambda: len(self._connections))
            metrics.http_buffered_bytes.set_function(lambda: self._buffered)

    # ------------------------------------------------------------------ serving

    def protect(self, app: web.Application) -> None:
        """Add the guard's middleware (busy marking, body deadline) and the neutral
        Server header to `app`; call before the app is frozen by a runner."""
        # Outermost: a body that never arrives never reaches the access log or a handler.
        app.middlewares.insert(0, self._middleware)
        app.on_response_prepare.append(_set_server_header)

    async def serve(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        shutdown_timeout: float = 60.0,
        handler_cancellation: bool = False,
    ) -> web.AppRunner:
        """Run `app` on host:port (0: any free port) under the guard; the caller
        stops it with `await runner.cleanup()`. aiohttp's access log is off;
        `shutdown_timeout` and `handler_cancellation` are aiohttp's runner options
        (a listener with streaming responses wants both)."""
        self.protect(app)
        self.throttle_accept_errors()
        options: dict[str, Any] = {"access_log": None}
        runner = web.AppRunner(
            app,
            handle_signals=False,
            shutdown_timeout=shutdown_timeout,
            handler_cancellation=handler_cancellation,
            **options,
        )
        await runner.setup()
        server = runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            return _GuardedHandler(self, server, loop=loop, **options)

        try:
            await _GuardedSite(runner, host, port, factory).start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    def throttle_accept_errors(self) -> None:
        """Fold asyncio's accept() resource errors on this loop into one warning per
        interval. asyncio reports the error once per queued connection and retries
        every second, so a flood at the descriptor limit writes thousands of
        tracebacks a second; one line says as much."""
        loop = asyncio.get_running_loop()
        if loop in self._loops:
            return
        self._loops.add(loop)
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == ACCEPT_FAILED_MESSAGE:
                error = context.get("exception")
                self._warn_accept(error=str(error), open_connections=len(self._connections))
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    # ------------------------------------------------------------- accounting

    @property
    def open_connections(self) -> int:
        """Connections open right now, across every listener."""
        return len(self._connections)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet handled, across every connection."""
        return self._buffered

    def closed_count(self, reason: str) -> int:
        """Connections the guard closed for `reason` since start (tests, metrics)."""
        return self._closed_reasons.get(reason, 0)

    def opened(self, handler: _GuardedHandler, transport: asyncio.Transport) -> None:
        """A connection was accepted: make room at the cap, arm its header deadline."""
        if len(self._connections) >= self.limits.max_connections:
            if self._idle:
                victim, _ = self._idle.popitem(last=False)
                self._close(victim, "idle_evicted")
            else:
                self._shed(transport, "refused_at_cap")
                return
        conn = _Connection(transport)
        self._connections[handler] = conn
        self._set_idle(handler, conn)

    def closed(self, handler: _GuardedHandler) -> None:
        """A connection ended, for whatever reason: release its place and bytes."""
        conn = self._connections.pop(handler, None)
        if conn is None:
            return
        self._idle.pop(handler, None)
        self._buffered -= conn.buffered
        if conn.timer is not None:
            conn.timer.cancel()

    def received(self, handler: _GuardedHandler, size: int) -> bool:
        """Count `size` new bytes; False (and the connection closed) when they would
        take the total past the budget and the connection holds more than a callback."""
        conn = self._connections.get(handler)
        if conn is None:  # refused at the cap, or already closed
            return False
        if (
            self._buffered + size > self.limits.max_buffered_bytes
            and conn.buffered + size > SMALL_REQUEST_BYTES
        ):
            self._close(handler, "memory_budget")
            return False
        conn.buffered += size
        self._buffered += size
        return True

    def _set_idle(self, handler: _GuardedHandler, conn: _Connection) -> None:
        self._idle[handler] = None
        self._idle.move_to_end(handler)
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        # One timer per connection, armed again only when it fires before the idle
        # deadline (the connection was busy meanwhile): a timer created and cancelled
        # per request was about 7 % of a signed callback's CPU under load.
        if conn.timer is None:
            deadline = conn.idle_since + self.limits.header_timeout_seconds
            conn.timer = loop.call_at(deadline, self._header_timeout, handler)

    def _header_timeout(self, handler: _GuardedHandler) -> None:
        conn = self._connections.get(handler)
        if conn is None:
            return
        conn.timer = None
        if conn.busy:
            return  # the request's end arms it again
        loop = asyncio.get_running_loop()
        deadline = conn.idle_since + self.limits.header_timeout_seconds
        if loop.time() + _CLOCK_SLACK >= deadline:
            self._close(handler, "header_timeout")
        else:  # idle again since the timer was armed: wait for the rest
            conn.timer = loop.call_at(deadline, self._header_timeout, handler)

    def _close(self, handler: _GuardedHandler, reason: str) -> None:
        conn = self._connections.get(handler)
        if conn is None:
            return
        self.closed(handler)
        self._shed(conn.transport, reason)

    def _shed(self, transport: asyncio.Transport, reason: str) -> None:
        # abort, not close: the descriptor and the buffers go now, whatever the peer does.
        transport.abort()
        self._count(reason)
        if reason != "header_timeout":  # timeouts are the normal end of idle connections
            self._warn_shed(
                reason=reason,
                open_connections=len(self._connections),
                buffered_bytes=self._buffered,
                closed=dict(self._closed_reasons),
            )

    # ------------------------------------------------------------- middleware

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Mark the connection busy while its request is handled (no header deadline,
        never evicted), and read the body under its deadline before the handler runs."""
        proto = request.protocol
        conn = self._connections.get(proto) if isinstance(proto, _GuardedHandler) else None
        if conn is None:  # not one of ours (or closed meanwhile): no bookkeeping
            return await self._with_body(request, handler)
        assert isinstance(proto, _GuardedHandler)
        conn.busy += 1
        self._idle.pop(proto, None)  # its timer stays armed: busy when it fires, it does nothing
        try:
            return await self._with_body(request, handler)
        finally:
            conn.busy -= 1
            if conn.busy == 0 and self._connections.get(proto) is conn:
                # The request's bytes are handled; what arrives next counts anew.
                self._buffered -= conn.buffered
                conn.buffered = 0
                self._set_idle(proto, conn)

    async def _with_body(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if (
            request.method in _BODY_METHODS
            and request.body_exists
            # Already received whole (a callback usually arrives in one segment with
            # its head): read() cannot wait, so no deadline is armed for it.
            and not request.content.is_eof()
            and request.match_info.http_exception is None
            # A declared size over the limit is the handler's 413, before any body is read.
            and (request.content_length is None or request.content_length <= request.client_max_size)
        ):
            try:
                async with asyncio.timeout(self.limits.body_timeout_seconds):
                    await request.read()  # cached: the handler's own read() returns it
            except TimeoutError:
                self._count("body_timeout")
                log.info("http_body_timeout", path=request.path)
                raise _closing(web.HTTPRequestTimeout(text="request body too slow\n")) from None
            except (ConnectionError, web.RequestPayloadError):
                # The peer left mid-body (or the budget closed it): nobody to answer,
                # and no traceback for aiohttp to log.
                log.debug("http_body_incomplete", path=request.path)
                raise _closing(web.HTTPBadRequest(text="incomplete body\n")) from None
        return await handler(request)

    def _count(self, reason: str) -> None:
        self._closed_reasons[reason] = self._closed_reasons.get(reason, 0) + 1
        if self._metrics is not None:
            self._metrics.http_closed.labels(reason=reason).inc()


def _closing(error: web.HTTPException) -> web.HTTPException:
    error.force_close()
    return error


async def _set_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER
