"""The webhook app over real HTTP on loopback in front of a fake store: the order of
its gates (size, signature, parsing), the signature rules, parsing, the fast path,
and every answer it gives. No database: the store's side is in
tests/integration/test_webhooks.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from dialer.metrics import CONTENT_TYPE_LATEST
from dialer.models import ApplyResult, CallEvent
from tests.webhook_harness import (  # noqa: F401 - fixtures are requested by name
    TOKEN,
    FakeStore,
    MakeServer,
    log_lines,
    make_server,
    sign,
    status_form,
)

# -- status callbacks ---------------------------------------------------------------


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
    # The signatures differ per run (one is for a random call_id): name the cases.
    ids=["missing", "forged", "empty", "other_public_url", "other_call_id", "other_params"],
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

    async def render(call_id: uuid.UUID, answered_by: str | None) -> str | None:
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
