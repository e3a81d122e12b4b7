"""The HTTP guard over real HTTP on loopback (docs/operations.md#connection-and-memory-limits):
header and body deadlines, the connection cap with idle eviction, the memory budget,
and answers that reveal nothing (no version, no echoed request bytes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from dialer.http_limits import SERVER_HEADER, HttpGuard, HttpLimits, connection_cap, fd_limit, fd_reserve
from dialer.webhooks import bound_port
from tests.webhook_harness import MakeServer, make_server, status_form  # noqa: F401 - fixture requested by name

Serve = Callable[..., Awaitable[tuple[HttpGuard, int]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve a small app (GET / answers at once, GET /block waits, POST /echo reads
    its body) under a guard with the given limits; stopped after the test."""
    runners: list[web.AppRunner] = []
    release = asyncio.Event()

    async def start(**limits: float) -> tuple[HttpGuard, int]:
        async def index(request: web.Request) -> web.StreamResponse:
            return web.Response(text="ok\n")

        async def block(request: web.Request) -> web.StreamResponse:
            await release.wait()
            return web.Response(text="released\n")

        async def echo(request: web.Request) -> web.StreamResponse:
            return web.Response(text=str(len(await request.read())))

        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/", index)
        app.router.add_get("/block", block)
        app.router.add_post("/echo", echo)
        settings: dict[str, float] = {"max_connections": 100, "header_timeout_seconds": 5.0}
        settings.update(limits)
        guard = HttpGuard(
            HttpLimits(
                max_connections=int(settings.pop("max_connections")),
                **settings,  # type: ignore[arg-type]
            )
        )
        runner = await guard.serve(app, "127.0.0.1", 0)
        runners.append(runner)
        return guard, bound_port(runner)

    yield start
    release.set()
    for runner in runners:
        await runner.cleanup()


async def _raw(port: int, payload: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    return reader, writer


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """Everything the server sent before closing, or None if it kept the connection open."""
    try:
        async with asyncio.timeout(seconds):
            data = b""
            while chunk := await reader.read(65536):
                data += chunk
            return data
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


async def _get(port: int, path: str = "/") -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        async with http.get(f"http://127.0.0.1:{port}{path}") as response:
            return response.status


async def test_a_request_head_not_finished_in_time_is_closed(serve: Serve) -> None:
    """A connection that sends part of a request head and stops is closed after the
    header timeout, not held open: a slow-loris cannot pin descriptors."""
    guard, port = await serve(header_timeout_seconds=0.5)
    reader, writer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    assert await _closed_within(reader, 3.0) == b""
    assert 0.4 < time.monotonic() - started < 2.0
    assert guard.closed_count("header_timeout") == 1
    assert guard.open_connections == 0
    writer.close()


async def test_a_connection_that_sends_nothing_and_an_idle_keepalive_are_closed(serve: Serve) -> None:
    """A silent connection, and a keep-alive connection idle after its response, are
    both closed after the header timeout."""
    guard, port = await serve(header_timeout_seconds=0.5)
    silent, silent_writer = await asyncio.open_connection("127.0.0.1", port)
    idle, idle_writer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _closed_within(silent, 3.0) == b""
    answer = await _closed_within(idle, 3.0)
    assert answer is not None and answer.startswith(b"HTTP/1.1 200")
    assert guard.closed_count("header_timeout") == 2
    silent_writer.close()
    idle_writer.close()


async def test_at_the_cap_the_longest_idle_connection_makes_room(serve: Serve) -> None:
    """With max_connections held by idle connections, a new request is still served:
    the connection idle the longest is closed for it."""
    guard, port = await serve(max_connections=5)
    idle = [await _raw(port, b"GET / HTTP/1.1\r\n") for _ in range(5)]
    await asyncio.sleep(0.05)
    assert guard.open_connections == 5
    assert await _get(port) == 200
    assert guard.closed_count("idle_evicted") >= 1
    assert await _closed_within(idle[0][0], 1.0) == b""  # the oldest went first
    assert guard.open_connections <= 5
    for _reader, writer in idle:
        writer.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused(serve: Serve) -> None:
    """Requests in progress are never evicted: when all max_connections are busy, a
    new connection is closed at once instead."""
    guard, port = await serve(max_connections=3)
    busy = [await _raw(port, b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(3)]
    await asyncio.sleep(0.1)
    reader, writer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _closed_within(reader, 1.0) == b""
    assert guard.closed_count("refused_at_cap") == 1
    assert guard.closed_count("idle_evicted") == 0
    for busy_reader, _writer in busy:
        assert await _closed_within(busy_reader, 0.2) is None  # still being served
    writer.close()
    for _reader, busy_writer in busy:
        busy_writer.close()


async def test_a_body_not_finished_in_time_gets_408_and_is_closed(serve: Serve) -> None:
    """A request whose body stalls is answered 408 after the body timeout and closed."""
    guard, port = await serve(body_timeout_seconds=0.5, header_timeout_seconds=0.5)
    reader, writer = await _raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    answer = await _closed_within(reader, 3.0)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408")
    assert guard.closed_count("body_timeout") == 1
    assert guard.open_connections == 0
    assert guard.buffered_bytes == 0
    writer.close()


async def test_the_memory_budget_closes_large_holders_and_lets_small_requests_through(serve: Serve) -> None:
    """Past max_buffered_bytes, connections holding large unfinished bodies are
    closed; a small request still gets its answer, and the total stays bounded."""
    budget = 256 * 1024
    guard, port = await serve(max_buffered_bytes=budget)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n"
    stalled = [await _raw(port, head + b"x" * 60_000) for _ in range(10)]
    await asyncio.sleep(0.2)
    assert guard.buffered_bytes <= budget
    assert guard.closed_count("memory_budget") >= 5
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}/echo", data=b"CallSid=CA1&CallStatus=completed") as response:
            assert response.status == 200
            assert await response.text() == "32"
    for _reader, writer in stalled:
        writer.close()


async def test_an_unparsable_request_gets_400_without_its_bytes_or_a_version(serve: Serve) -> None:
    """aiohttp's 400 quotes the offending request line or header back; ours says
    "400 Bad Request" only, and no answer names a library or version."""
    _guard, port = await serve()
    for raw in (
        b"G\x01T /secret-path HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: secret\x01value\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 12secret\r\n\r\n",
    ):
        reader, writer = await _raw(port, raw)
        answer = await _closed_within(reader, 2.0)
        assert answer is not None
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400"), answer
        assert b"secret" not in answer
        assert body == b"400 Bad Request\n"
        assert f"Server: {SERVER_HEADER}".encode() in head
        assert b"aiohttp" not in answer and b"Python" not in answer
        writer.close()


async def test_webhook_answers_carry_no_version(make_server: MakeServer) -> None:
    """200, 403, 404 and 405 answers of the webhook app say `Server: dialer`."""
    server = await make_server()
    for method, path in (("GET", "/healthz"), ("POST", "/twilio/status"), ("GET", "/nope"), ("PUT", "/healthz")):
        async with server.session.request(method, server.base + path, data=status_form()) as response:
            assert response.headers["Server"] == SERVER_HEADER, (method, path)


def test_the_connection_cap_leaves_a_reserve_below_the_descriptor_limit() -> None:
    """Unless configured, the cap is the soft RLIMIT_NOFILE less the reserve for the
    database pool and the calls (never below 16); a configured cap is taken as is."""
    reserve = fd_reserve(pool_max_size=10, max_concurrent_calls=50)
    assert reserve == 64 + 10 + 200
    assert connection_cap(0, reserve) == max(16, fd_limit() - reserve)
    assert connection_cap(0, fd_limit()) == 16
    assert connection_cap(123, reserve) == 123


async def test_a_long_streaming_answer_is_busy_not_idle() -> None:
    """A response streamed for longer than the header timeout (server-sent events, as
    a second listener may serve) is not cut: the connection is busy; and with
    handler_cancellation, a client that leaves cancels its handler."""
    cancelled = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(int(request.query.get("n", "8"))):
                await response.write(b"data: tick\n\n")
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return response

    app = web.Application()
    app.router.add_get("/events", stream)
    guard = HttpGuard(HttpLimits(max_connections=10, header_timeout_seconds=0.3))
    runner = await guard.serve(app, "127.0.0.1", 0, shutdown_timeout=1.0, handler_cancellation=True)
    port = bound_port(runner)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/events") as response:
            assert (await response.read()).count(b"tick") == 8
        assert guard.closed_count("header_timeout") == 0
        _reader, writer = await _raw(port, b"GET /events?n=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.2)
        writer.transport.abort()
        async with asyncio.timeout(2):
            await cancelled.wait()
    finally:
        await runner.cleanup()
