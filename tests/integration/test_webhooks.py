"""The webhook listener over real HTTP on loopback, with requests signed exactly as
Twilio signs them."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from dialer.database import translate_errors
from dialer.logs import configure_logging
from dialer.metrics import CONTENT_TYPE_LATEST, Metrics
from dialer.models import ApplyResult, CallEvent
from dialer.store.lifecycle import LifecycleStore
from dialer.webhooks import CallbackStore, WebhookDeps, bound_port, create_app, serve

TOKEN = "test-auth-token-5f0c1d2e3a4b"
PUBLIC_URL = "https://dialer.example.com"
STAMP = "Wed, 25 Nov 2026 19:26:17 +0000"


# -- harness ------------------------------------------------------------------------


@dataclass
class FakeStore:
    """Records what the webhooks hand over; answers `result` or raises `error`, through
    the same error boundary as the real store (a driver error leaves it translated)."""

    result: ApplyResult = ApplyResult.APPLIED
    error: BaseException | None = None
    delay: float = 0.0
    events: list[tuple[uuid.UUID | None, CallEvent]] = field(default_factory=list)
    recordings: list[tuple[uuid.UUID | None, str, str]] = field(default_factory=list)

    @translate_errors
    async def apply_call_event(self, call_id: uuid.UUID | None, event: CallEvent) -> ApplyResult:
        """Record the event."""
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.events.append((call_id, event))
        return self.result

    @translate_errors
    async def record_recording(self, call_id: uuid.UUID | None, call_sid: str, recording_url: str) -> ApplyResult:
        """Record the recording."""
        if self.error is not None:
            raise self.error
        self.recordings.append((call_id, call_sid, recording_url))
        return self.result


def sign(path_qs: str, params: Mapping[str, str] | None = None, *, public_url: str = PUBLIC_URL) -> str:
    """The X-Twilio-Signature Twilio would send for this URL and form."""
    return str(RequestValidator(TOKEN).compute_signature(public_url + path_qs, dict(params or {})))


@dataclass
class Reply:
    """What the client saw."""

    status: int
    text: str
    content_type: str


@dataclass
class Server:
    """One running webhook app and a client session to it."""

    base: str
    session: aiohttp.ClientSession
    deps: WebhookDeps

    async def request(
        self,
        method: str,
        path_qs: str,
        *,
        form: Mapping[str, str] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        signature: str | None = None,
        signed: bool = True,
    ) -> Reply:
        """Send one request; signed for `form` (at PUBLIC_URL) unless told otherwise."""
        all_headers = dict(headers or {})
        if signature is not None:
            all_headers["X-Twilio-Signature"] = signature
        elif signed:
            all_headers["X-Twilio-Signature"] = sign(path_qs, form)
        async with self.session.request(
            method, self.base + path_qs, data=form if data is None else data, headers=all_headers
        ) as resp:
            return Reply(resp.status, await resp.text(), resp.headers.get("Content-Type", ""))

    async def post(self, path_qs: str, form: Mapping[str, str] | None = None, **kw: Any) -> Reply:
        """POST a form."""
        return await self.request("POST", path_qs, form=form, **kw)

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """One sample of this app's metrics registry (0 when absent)."""
        value = self.deps.metrics.registry.get_sample_value(name, dict(labels or {}))
        return float(value or 0.0)


async def _ready() -> bool:
    return True


async def _no_twiml(call_id: uuid.UUID) -> str | None:
    return None


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    """Start webhook apps on loopback port 0; everything is stopped after the test."""
    async with AsyncExitStack() as stack:

        async def make(
            store: CallbackStore | None = None,
            *,
            public_url: str = PUBLIC_URL,
            max_body_bytes: int = 64 * 1024,
            is_ready: Callable[[], Awaitable[bool]] = _ready,
            render_twiml: Callable[[uuid.UUID], Awaitable[str | None]] = _no_twiml,
            intercept: Callable[[uuid.UUID | None, CallEvent], bool] | None = None,
            store_timeout_seconds: float = 10.0,
        ) -> Server:
            deps = WebhookDeps(
                store=store if store is not None else FakeStore(),
                auth_token=TOKEN,
                public_url=public_url,
                metrics=Metrics(),
                max_body_bytes=max_body_bytes,
                is_ready=is_ready,
                render_twiml=render_twiml,
                intercept=intercept,
                store_timeout_seconds=store_timeout_seconds,
            )
            runner = await serve(create_app(deps), "127.0.0.1", 0)
            stack.push_async_callback(runner.cleanup)
            session = await stack.enter_async_context(aiohttp.ClientSession())
            return Server(f"http://127.0.0.1:{bound_port(runner)}", session, deps)

        yield make


def status_form(sid: str = "CA00000000000000000000000000000001", status: str = "completed", **extra: str) -> dict[str, str]:
    """A status callback form as Twilio sends it."""
    form = {
        "AccountSid": "AC00000000000000000000000000000000",
        "CallSid": sid,
        "CallStatus": status,
        "To": "+34911234567",
        "From": "+34910000000",
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
        "Timestamp": STAMP,
        "SequenceNumber": "0",
    }
    form.update(extra)
    return form


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """JSON log lines written during the test (structlog reset afterwards)."""
    out = io.StringIO()
    configure_logging("debug", "json", secrets=[TOKEN], stream=out)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    structlog.reset_defaults()


# -- status callbacks through a fake store ------------------------------------------


async def test_signed_status_callback_reaches_the_store(make_server: MakeServer) -> None:
    """A correctly signed callback is parsed and handed to the store with its call_id."""
    store = FakeStore()
    server = await make_server(store)
    call_id = uuid.uuid4()
    reply = await server.post(f"/twilio/status?call_id={call_id}", status_form(CallDuration="17"))
    assert reply.status == 200
    assert reply.content_type.startswith("text/xml")
    assert "<Response/>" in reply.text
    [(got_id, event)] = store.events
    assert got_id == call_id
    assert event.status == "completed"
    assert event.duration == 17
    assert event.end_time is not None
    assert server.metric("dialer_callbacks_total", {"result": "applied"}) == 1
    assert server.metric("dialer_callback_seconds_count") == 1


async def test_proxy_host_header_does_not_matter(make_server: MakeServer) -> None:
    """The signature is checked against public_url, whatever Host/scheme a proxy forwards."""
    store = FakeStore()
    server = await make_server(store)
    path = f"/twilio/status?call_id={uuid.uuid4()}"
    reply = await server.post(path, status_form(), headers={"Host": "internal:9000", "X-Forwarded-Proto": "http"})
    assert reply.status == 200
    assert len(store.events) == 1


async def test_public_url_with_path_prefix(make_server: MakeServer) -> None:
    """A public_url with a path prefix (proxy strips it) is signed as the carrier saw it."""
    store = FakeStore()
    server = await make_server(store, public_url="https://example.com/dialer")
    path = "/twilio/status?call_id=x"
    reply = await server.post(path, status_form(), signature=sign(path, status_form(), public_url="https://example.com/dialer"))
    assert reply.status == 200
    assert store.events[0][0] is None


async def test_invalid_call_id_is_passed_as_none(make_server: MakeServer) -> None:
    """A call_id that is not a UUID is treated as absent: the store looks up by CallSid."""
    store = FakeStore()
    server = await make_server(store)
    reply = await server.post("/twilio/status?call_id=not-a-uuid", status_form())
    assert reply.status == 200
    assert store.events[0][0] is None


async def test_no_call_id_at_all(make_server: MakeServer) -> None:
    """A callback URL without a query string still works (lookup by CallSid)."""
    store = FakeStore()
    server = await make_server(store)
    assert (await server.post("/twilio/status", status_form())).status == 200
    assert store.events[0][0] is None


@pytest.mark.parametrize(
    ("case", "signature"),
    [
        ("missing", None),
        ("forged", "bm90IGEgc2lnbmF0dXJl"),
        ("empty", ""),
        ("other_public_url", sign("/twilio/status?call_id=PLACEHOLDER", status_form(), public_url="https://evil.example.com")),
        ("other_call_id", sign(f"/twilio/status?call_id={uuid.uuid4()}", status_form())),
        ("other_params", sign("/twilio/status?call_id=PLACEHOLDER", status_form(status="busy"))),
    ],
)
async def test_bad_signatures_are_403_and_change_nothing(make_server: MakeServer, case: str, signature: str | None) -> None:
    """Missing, forged or misdirected signatures are refused and counted."""
    store = FakeStore()
    server = await make_server(store)
    path = "/twilio/status?call_id=PLACEHOLDER"
    if signature is None:
        reply = await server.post(path, status_form(), signed=False)
    else:
        reply = await server.post(path, status_form(), signature=signature)
    assert reply.status == 403, case
    assert store.events == []
    assert server.metric("dialer_signature_failures_total") == 1


async def test_validator_exception_is_403_not_500(make_server: MakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the validator raises on odd input, the answer is 403."""

    def explode(*args: object, **kwargs: object) -> bool:
        raise TypeError("odd input")

    store = FakeStore()
    server = await make_server(store)
    signature = sign("/twilio/status", status_form())
    monkeypatch.setattr(RequestValidator, "compute_signature", explode)
    reply = await server.post("/twilio/status", status_form(), signature=signature)
    assert reply.status == 403
    assert store.events == []


async def test_non_ascii_signature_is_403(make_server: MakeServer) -> None:
    """A signature header with bytes outside ASCII is a 403, not a crash."""
    store = FakeStore()
    server = await make_server(store)
    reply = await server.post("/twilio/status", status_form(), signature="ñ" * 28)
    assert reply.status == 403
    assert store.events == []


async def test_declared_oversized_body_is_413_before_the_signature(make_server: MakeServer) -> None:
    """A Content-Length above the limit is refused before any signature work."""
    store = FakeStore()
    server = await make_server(store, max_body_bytes=2048)
    form = status_form(Padding="x" * 4096)
    reply = await server.post("/twilio/status", form, signed=False)
    assert reply.status == 413
    assert store.events == []
    assert server.metric("dialer_signature_failures_total") == 0


async def test_chunked_oversized_body_is_413(make_server: MakeServer) -> None:
    """A chunked body (no Content-Length) is cut off at the limit too."""
    store = FakeStore()
    server = await make_server(store, max_body_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"Padding=" + b"x" * 1024 + b"&"

    reply = await server.request(
        "POST",
        "/twilio/status",
        data=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        signature="irrelevant",
    )
    assert reply.status == 413
    assert store.events == []


async def test_body_at_the_limit_is_accepted(make_server: MakeServer) -> None:
    """The limit is inclusive: a body of exactly max_body_bytes is read."""
    store = FakeStore()
    server = await make_server(store, max_body_bytes=2048)
    form = status_form()
    pad = 2048 - len(urlencode({**form, "Padding": ""}))
    form["Padding"] = "p" * pad
    assert len(urlencode(form)) == 2048
    reply = await server.post("/twilio/status", form)
    assert reply.status == 200
    assert len(store.events) == 1


@pytest.mark.parametrize("signed", [True, False])
async def test_json_body(make_server: MakeServer, signed: bool) -> None:
    """A JSON body signed for its URL is 400; unsigned, it is 403."""
    store = FakeStore()
    server = await make_server(store)
    body = json.dumps(status_form())
    reply = await server.request(
        "POST",
        "/twilio/status",
        data=body,
        headers={"Content-Type": "application/json"},
        signature=sign("/twilio/status") if signed else "bogus",
    )
    assert reply.status == (400 if signed else 403)
    assert store.events == []


async def test_empty_signed_body_is_400(make_server: MakeServer) -> None:
    """A signed request without fields lacks CallSid/CallStatus: 400."""
    store = FakeStore()
    server = await make_server(store)
    reply = await server.request(
        "POST",
        "/twilio/status",
        data=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        signature=sign("/twilio/status"),
    )
    assert reply.status == 400
    assert store.events == []
    assert server.metric("dialer_callbacks_total", {"result": "malformed"}) == 1


async def test_undecodable_signed_body_is_400(make_server: MakeServer) -> None:
    """Bytes that are not UTF-8 form data are 400 once the signature passes."""
    store = FakeStore()
    server = await make_server(store)
    reply = await server.request(
        "POST",
        "/twilio/status",
        data=b"CallSid=%ff%fe&CallStatus=\xff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        signature=sign("/twilio/status"),
    )
    assert reply.status == 400
    assert store.events == []


async def test_missing_call_status_is_400(make_server: MakeServer) -> None:
    """A signed form without CallStatus is malformed."""
    store = FakeStore()
    server = await make_server(store)
    form = status_form()
    del form["CallStatus"]
    assert (await server.post("/twilio/status", form)).status == 400
    assert store.events == []


async def test_unknown_route_and_wrong_method(make_server: MakeServer) -> None:
    """Unknown paths are 404; a known path with the wrong method is 405."""
    server = await make_server()
    assert (await server.request("GET", "/nope", signed=False)).status == 404
    assert (await server.request("GET", "/twilio/status", signed=False)).status == 405
    assert (await server.request("POST", "/healthz", signed=False)).status == 405


# -- fast path, unknown calls, database errors --------------------------------------


async def test_intercepted_non_final_event_skips_the_store(make_server: MakeServer) -> None:
    """The engine's fast path absorbs a non-final event: no store call."""
    seen: list[tuple[uuid.UUID | None, str]] = []

    def intercept(call_id: uuid.UUID | None, event: CallEvent) -> bool:
        seen.append((call_id, event.status))
        return True

    store = FakeStore()
    server = await make_server(store, intercept=intercept)
    call_id = uuid.uuid4()
    assert (await server.post(f"/twilio/status?call_id={call_id}", status_form(status="ringing"))).status == 200
    assert seen == [(call_id, "ringing")]
    assert store.events == []
    assert server.metric("dialer_callbacks_total", {"result": "intercepted"}) == 1


async def test_final_event_is_never_intercepted(make_server: MakeServer) -> None:
    """Final events always go to the store; intercept is not even asked."""
    seen: list[str] = []

    def intercept(call_id: uuid.UUID | None, event: CallEvent) -> bool:
        seen.append(event.status)
        return True

    store = FakeStore()
    server = await make_server(store, intercept=intercept)
    assert (await server.post("/twilio/status", status_form(status="busy"))).status == 200
    assert seen == []
    assert [e.status for _, e in store.events] == ["busy"]


@pytest.mark.parametrize("behaviour", ["declines", "raises"])
async def test_intercept_declining_or_failing_falls_through(make_server: MakeServer, behaviour: str) -> None:
    """When intercept says False (or breaks), the store still gets the event."""

    def intercept(call_id: uuid.UUID | None, event: CallEvent) -> bool:
        if behaviour == "raises":
            raise RuntimeError("engine bug")
        return False

    store = FakeStore()
    server = await make_server(store, intercept=intercept)
    assert (await server.post("/twilio/status", status_form(status="in-progress"))).status == 200
    assert [e.status for _, e in store.events] == ["in-progress"]


async def test_unknown_call_is_acknowledged_and_logged(
    make_server: MakeServer, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """UNKNOWN from the store → 200 and one callback_unknown_call line with call ids."""
    server = await make_server(FakeStore(result=ApplyResult.UNKNOWN))
    call_id = uuid.uuid4()
    reply = await server.post(f"/twilio/status?call_id={call_id}", status_form(sid="CAunknown"))
    assert reply.status == 200
    [line] = [entry for entry in log_lines() if entry["event"] == "callback_unknown_call"]
    assert line["call_id"] == str(call_id)
    assert line["call_sid"] == "CAunknown"
    assert server.metric("dialer_callbacks_total", {"result": "unknown"}) == 1


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection lost"),
        asyncpg.InterfaceError("pool is closing"),
        ConnectionRefusedError("refused"),
    ],
)
async def test_database_error_is_503_and_counted(make_server: MakeServer, error: BaseException) -> None:
    """A DB failure answers 503 (Twilio retries) and counts a db error."""
    server = await make_server(FakeStore(error=error))
    reply = await server.post("/twilio/status", status_form())
    assert reply.status == 503
    assert server.metric("dialer_db_errors_total") == 1
    assert server.metric("dialer_callbacks_total", {"result": "error"}) == 1


async def test_slow_store_is_503_in_time(make_server: MakeServer) -> None:
    """A store slower than store_timeout_seconds is answered 503 before Twilio gives up."""
    server = await make_server(FakeStore(delay=5.0), store_timeout_seconds=0.1)
    reply = await server.post("/twilio/status", status_form())
    assert reply.status == 503
    assert server.metric("dialer_db_errors_total") == 1


async def test_access_log_line_keeps_secrets_out(
    make_server: MakeServer, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """One http_request line per request: path without query, no token, no signature."""
    server = await make_server()
    call_id = uuid.uuid4()
    path = f"/twilio/status?call_id={call_id}&secret=hunter2"
    signature = sign(path, status_form())
    assert (await server.post(path, status_form(), signature=signature)).status == 200
    lines = log_lines()
    [access] = [entry for entry in lines if entry["event"] == "http_request"]
    assert access["method"] == "POST"
    assert access["path"] == "/twilio/status"
    assert access["status"] == 200
    assert access["call_id"] == str(call_id)
    assert isinstance(access["duration_ms"], float)
    text = json.dumps(lines)
    assert signature not in text
    assert TOKEN not in text
    assert "hunter2" not in text


# -- recording and TwiML --------------------------------------------------------------


async def test_completed_recording_is_stored(make_server: MakeServer) -> None:
    """A completed recording's URL reaches the store."""
    store = FakeStore()
    server = await make_server(store)
    call_id = uuid.uuid4()
    form = {
        "CallSid": "CA1",
        "RecordingSid": "RE1",
        "RecordingStatus": "completed",
        "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
    }
    assert (await server.post(f"/twilio/recording?call_id={call_id}", form)).status == 200
    assert store.recordings == [(call_id, "CA1", form["RecordingUrl"])]


async def test_unfinished_recording_is_ignored(make_server: MakeServer) -> None:
    """Only `completed` recordings are stored; others are acknowledged."""
    store = FakeStore()
    server = await make_server(store)
    form = {"CallSid": "CA1", "RecordingStatus": "in-progress", "RecordingUrl": "https://x/y"}
    assert (await server.post("/twilio/recording", form)).status == 200
    assert store.recordings == []


async def test_completed_recording_without_url_is_400(make_server: MakeServer) -> None:
    """A completed recording must name its URL."""
    store = FakeStore()
    server = await make_server(store)
    form = {"CallSid": "CA1", "RecordingStatus": "completed"}
    assert (await server.post("/twilio/recording", form)).status == 400
    assert store.recordings == []


async def test_unsigned_recording_is_403(make_server: MakeServer) -> None:
    """The recording callback is signed like every other."""
    store = FakeStore()
    server = await make_server(store)
    form = {"CallSid": "CA1", "RecordingStatus": "completed", "RecordingUrl": "https://x/y"}
    assert (await server.post("/twilio/recording", form, signed=False)).status == 403
    assert store.recordings == []


async def test_twiml_document_get_and_post(make_server: MakeServer) -> None:
    """The TwiML of a known call is served as text/xml on GET and POST."""
    known = uuid.uuid4()

    async def render(call_id: uuid.UUID) -> str | None:
        return "<Response><Say>Hola</Say></Response>" if call_id == known else None

    server = await make_server(render_twiml=render)
    path = f"/twilio/twiml?call_id={known}"
    got = await server.request("GET", path)
    assert got.status == 200
    assert got.content_type.startswith("text/xml")
    assert "<Say>Hola</Say>" in got.text
    posted = await server.post(path, {"CallSid": "CA1", "CallStatus": "in-progress"})
    assert posted.status == 200
    assert (await server.request("GET", f"/twilio/twiml?call_id={uuid.uuid4()}")).status == 404
    assert (await server.request("GET", "/twilio/twiml?call_id=nope")).status == 404
    assert (await server.request("GET", path, signed=False)).status == 403


# -- probes -------------------------------------------------------------------------


async def test_healthz(make_server: MakeServer) -> None:
    """/healthz answers 200 without any signature."""
    server = await make_server()
    assert (await server.request("GET", "/healthz", signed=False)).status == 200


@pytest.mark.parametrize(("answer", "expected"), [(True, 200), (False, 503), (None, 503)])
async def test_readyz_follows_is_ready(make_server: MakeServer, answer: bool | None, expected: int) -> None:
    """/readyz is 200 only when is_ready says so; a failing check is 503."""

    async def is_ready() -> bool:
        if answer is None:
            raise OSError("pool gone")
        return answer

    server = await make_server(is_ready=is_ready)
    assert (await server.request("GET", "/readyz", signed=False)).status == expected


async def test_metrics_parse_as_prometheus_text(make_server: MakeServer) -> None:
    """/metrics is Prometheus text that the reference parser reads, including callback figures."""
    server = await make_server()
    await server.post("/twilio/status", status_form())
    await server.post("/twilio/status", status_form(), signed=False)
    reply = await server.request("GET", "/metrics", signed=False)
    assert reply.status == 200
    assert reply.content_type == CONTENT_TYPE_LATEST
    families = {family.name: family for family in text_string_to_metric_families(reply.text)}
    assert "dialer_callback_seconds" in families
    assert "dialer_db_errors" in families
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("dialer_callbacks_total", (("result", "applied"),))] == 1
    assert samples[("dialer_signature_failures_total", ())] == 1


# -- against the real LifecycleStore on a real database ---------------------------------

SID = "CA" + "a" * 32


@dataclass
class LiveCall:
    """One in-progress call inserted with plain SQL, as the engine would have left it."""

    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    call_id: uuid.UUID

    @property
    def status_path(self) -> str:
        """The status callback path the engine gives the carrier for this call."""
        return f"/twilio/status?call_id={self.call_id}"


async def insert_live_call(
    conn: asyncpg.Connection, *, max_retries: int = 2, retry_delay_minutes: int = 30, sid: str = SID
) -> LiveCall:
    """An active campaign with one contact whose first attempt is in progress at the carrier."""
    campaign_id = await conn.fetchval(
        "INSERT INTO campaigns (name, status, caller_id, max_retries, retry_delay_minutes) "
        "VALUES ('webhooks', 'active', '+34910000000', $1, $2) RETURNING id",
        max_retries,
        retry_delay_minutes,
    )
    contact_id = await conn.fetchval("INSERT INTO contacts (phone_number) VALUES ('+34911234567') RETURNING id")
    await conn.execute(
        "INSERT INTO campaign_contacts (campaign_id, contact_id, call_status, call_count, last_call_at) "
        "VALUES ($1, $2, 'in_progress', 1, timezone('utc', now()))",
        campaign_id,
        contact_id,
    )
    call_id = await conn.fetchval(
        "INSERT INTO calls (campaign_id, contact_id, status, call_sid, dialed_at) "
        "VALUES ($1, $2, 'in_progress', $3, timezone('utc', now())) RETURNING id",
        campaign_id,
        contact_id,
        sid,
    )
    return LiveCall(campaign_id, contact_id, call_id)


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table in the public schema, in key order."""
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    return {
        t["tablename"]: [dict(r) for r in await conn.fetch(f'SELECT * FROM "{t["tablename"]}" ORDER BY 1')]
        for t in tables
    }


async def counters(conn: asyncpg.Connection, campaign_id: uuid.UUID) -> dict[str, int]:
    """The campaign's four counters."""
    row = await conn.fetchrow(
        "SELECT total_calls, pending_calls, successful_calls, failed_calls FROM campaigns WHERE id = $1",
        campaign_id,
    )
    assert row is not None
    return dict(row)


def _no_template_check(template: str) -> None:
    """Templates play no part in callbacks."""


@pytest.fixture
async def real_server(make_server: MakeServer, pool: asyncpg.Pool) -> Server:
    """The webhook app in front of the real LifecycleStore on the test's own database."""
    store = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=_no_template_check)
    return await make_server(store)


def at(hh_mm_ss: str) -> str:
    """An RFC 2822 Timestamp on 25 Nov 2026 at this UTC time."""
    return f"Wed, 25 Nov 2026 {hh_mm_ss} +0000"


async def test_real_normal_sequence_completes_the_call(real_server: Server, conn: asyncpg.Connection) -> None:
    """initiated, ringing, in-progress, completed → call completed with duration, contact completed, counters right."""
    call = await insert_live_call(conn)
    sequence = [
        ("initiated", "19:25:50", {}),
        ("ringing", "19:25:52", {}),
        ("in-progress", "19:26:00", {}),
        ("completed", "19:26:17", {"CallDuration": "17"}),
    ]
    for n, (status, hms, extra) in enumerate(sequence):
        form = status_form(SID, status, Timestamp=at(hms), SequenceNumber=str(n), **extra)
        assert (await real_server.post(call.status_path, form)).status == 200
    row = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", call.call_id)
    assert row is not None
    assert row["status"] == "completed"
    assert row["outcome"] == "completed"
    assert row["duration"] == 17
    assert row["started_at"] == datetime(2026, 11, 25, 19, 26, 0)
    assert row["ended_at"] == datetime(2026, 11, 25, 19, 26, 17)
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts") == "completed"
    assert await counters(conn, call.campaign_id) == {
        "total_calls": 1,
        "pending_calls": 0,
        "successful_calls": 1,
        "failed_calls": 0,
    }
    assert real_server.metric("dialer_callbacks_total", {"result": "applied"}) == 4


async def test_real_final_callback_twice_changes_nothing_the_second_time(
    real_server: Server, conn: asyncpg.Connection
) -> None:
    """A duplicated final callback is acknowledged and leaves every table as it was."""
    call = await insert_live_call(conn)
    form = status_form(SID, "completed", CallDuration="9")
    assert (await real_server.post(call.status_path, form)).status == 200
    before = await snapshot(conn)
    assert (await real_server.post(call.status_path, form)).status == 200
    assert await snapshot(conn) == before
    assert real_server.metric("dialer_callbacks_total", {"result": "ignored"}) == 1


async def test_real_ringing_after_completed_changes_nothing(real_server: Server, conn: asyncpg.Connection) -> None:
    """An out-of-order non-final callback after the end is ignored."""
    call = await insert_live_call(conn)
    assert (await real_server.post(call.status_path, status_form(SID, "completed", CallDuration="3"))).status == 200
    before = await snapshot(conn)
    assert (await real_server.post(call.status_path, status_form(SID, "ringing"))).status == 200
    assert await snapshot(conn) == before


async def test_real_unknown_sid_is_acknowledged_and_changes_nothing(
    real_server: Server, conn: asyncpg.Connection
) -> None:
    """completed for a CallSid (and call_id) nobody knows → 200, no row changed."""
    await insert_live_call(conn)
    before = await snapshot(conn)
    reply = await real_server.post(f"/twilio/status?call_id={uuid.uuid4()}", status_form("CA" + "f" * 32, "completed"))
    assert reply.status == 200
    reply = await real_server.post("/twilio/status", status_form("CA" + "e" * 32, "completed"))
    assert reply.status == 200
    assert await snapshot(conn) == before
    assert real_server.metric("dialer_callbacks_total", {"result": "unknown"}) == 2


async def test_real_lookup_by_sid_when_call_id_is_mangled(real_server: Server, conn: asyncpg.Connection) -> None:
    """A callback whose call_id is not a UUID still finds its call by CallSid."""
    call = await insert_live_call(conn)
    assert (await real_server.post("/twilio/status?call_id=garbage", status_form(SID, "completed"))).status == 200
    assert await conn.fetchval("SELECT status::text FROM calls WHERE id = $1", call.call_id) == "completed"


async def test_real_busy_with_retries_left_schedules_a_retry(real_server: Server, conn: asyncpg.Connection) -> None:
    """busy with retries left → retry row with retry_count+1 at ended_at + retry_delay_minutes."""
    call = await insert_live_call(conn, max_retries=2, retry_delay_minutes=30)
    form = status_form(SID, "busy", Timestamp=at("19:26:17"))
    assert (await real_server.post(call.status_path, form)).status == 200
    rows = await conn.fetch("SELECT * FROM calls ORDER BY retry_count")
    assert [(r["status"], r["retry_count"]) for r in rows] == [("failed", 0), ("scheduled", 1)]
    assert rows[0]["outcome"] == "busy"
    assert rows[0]["ended_at"] == datetime(2026, 11, 25, 19, 26, 17)
    assert rows[1]["scheduled_at"] == rows[0]["ended_at"] + timedelta(minutes=30)
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts") == "scheduled"
    assert await counters(conn, call.campaign_id) == {
        "total_calls": 2,
        "pending_calls": 1,
        "successful_calls": 0,
        "failed_calls": 1,
    }


async def test_real_busy_without_retries_fails_the_contact(real_server: Server, conn: asyncpg.Connection) -> None:
    """busy on the last allowed attempt → contact failed, no retry row."""
    call = await insert_live_call(conn, max_retries=0)
    assert (await real_server.post(call.status_path, status_form(SID, "busy"))).status == 200
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1
    assert await conn.fetchval("SELECT status::text FROM calls") == "failed"
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts") == "failed"
    assert await counters(conn, call.campaign_id) == {
        "total_calls": 1,
        "pending_calls": 0,
        "successful_calls": 0,
        "failed_calls": 1,
    }


async def test_real_concurrent_duplicate_final_callbacks_make_one_retry(
    real_server: Server, conn: asyncpg.Connection
) -> None:
    """Five copies of one busy callback racing each other schedule exactly one retry."""
    call = await insert_live_call(conn, max_retries=3)
    form = status_form(SID, "no-answer")
    replies = await asyncio.gather(*(real_server.post(call.status_path, form) for _ in range(5)))
    assert [r.status for r in replies] == [200] * 5
    assert await conn.fetchval("SELECT count(*) FROM calls WHERE retry_count = 1") == 1
    assert await counters(conn, call.campaign_id) == {
        "total_calls": 2,
        "pending_calls": 1,
        "successful_calls": 0,
        "failed_calls": 1,
    }
    assert real_server.metric("dialer_callbacks_total", {"result": "applied"}) == 1
    assert real_server.metric("dialer_callbacks_total", {"result": "ignored"}) == 4


async def test_real_final_callback_notifies_the_waiting_coroutine(
    real_server: Server, conn: asyncpg.Connection, db_url: str
) -> None:
    """The status change NOTIFYs dialer_call so the call coroutine on any instance wakes."""
    call = await insert_live_call(conn)
    listener = await asyncpg.connect(db_url)
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("dialer_call", lambda *args: got.put_nowait(str(args[3])))
        assert (await real_server.post(call.status_path, status_form(SID, "completed"))).status == 200
        payload = await asyncio.wait_for(got.get(), timeout=5)
        # Only the prefix is the webhooks' concern; the engine owns the rest of the payload.
        assert payload.startswith(f"{call.call_id}:completed")
    finally:
        await listener.close()


async def test_real_recording_is_stored(real_server: Server, conn: asyncpg.Connection) -> None:
    """A completed recording callback sets calls.recording_url."""
    call = await insert_live_call(conn)
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"
    form = {"CallSid": SID, "RecordingStatus": "completed", "RecordingUrl": url}
    assert (await real_server.post(f"/twilio/recording?call_id={call.call_id}", form)).status == 200
    assert await conn.fetchval("SELECT recording_url FROM calls WHERE id = $1", call.call_id) == url


def _completed_form() -> dict[str, str]:
    return status_form(SID, "completed", CallDuration="30")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("forged_signature", 403),
        ("missing_signature", 403),
        ("signed_for_other_public_url", 403),
        ("signed_for_other_call_id", 403),
        ("one_megabyte_body", 413),
        ("signed_json_body", 400),
        ("unsigned_json_body", 403),
        ("signed_empty_body", 400),
    ],
)
async def test_real_rejected_requests_change_no_row(
    real_server: Server, conn: asyncpg.Connection, case: str, expected: int
) -> None:
    """Every refused request (403/413/400) leaves every table exactly as it was."""
    call = await insert_live_call(conn)
    path = call.status_path
    form = _completed_form()
    before = await snapshot(conn)
    json_headers = {"Content-Type": "application/json"}
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if case == "forged_signature":
        reply = await real_server.post(path, form, signature=sign(path, form).swapcase())
    elif case == "missing_signature":
        reply = await real_server.post(path, form, signed=False)
    elif case == "signed_for_other_public_url":
        reply = await real_server.post(path, form, signature=sign(path, form, public_url="http://127.0.0.1:8080"))
    elif case == "signed_for_other_call_id":
        reply = await real_server.post(path, form, signature=sign(f"/twilio/status?call_id={uuid.uuid4()}", form))
    elif case == "one_megabyte_body":
        reply = await real_server.post(path, {**form, "Padding": "x" * 1024 * 1024})
    elif case == "signed_json_body":
        reply = await real_server.request("POST", path, data=json.dumps(form), headers=json_headers, signature=sign(path))
    elif case == "unsigned_json_body":
        reply = await real_server.request("POST", path, data=json.dumps(form), headers=json_headers, signed=False)
    else:
        reply = await real_server.request("POST", path, data=b"", headers=form_headers, signature=sign(path))
    assert reply.status == expected
    assert await snapshot(conn) == before
    # The same call still takes a proper callback: the refusals consumed nothing.
    assert (await real_server.post(path, form)).status == 200
    assert await conn.fetchval("SELECT status::text FROM calls WHERE id = $1", call.call_id) == "completed"


async def test_real_readyz_follows_the_pool(make_server: MakeServer, pool: asyncpg.Pool) -> None:
    """/readyz with a pool-backed check: 200 while the pool answers, 503 once it is closed."""

    async def is_ready() -> bool:
        return bool(await pool.fetchval("SELECT true"))

    server = await make_server(is_ready=is_ready)
    assert (await server.request("GET", "/readyz", signed=False)).status == 200
    await pool.close()
    assert (await server.request("GET", "/readyz", signed=False)).status == 503
