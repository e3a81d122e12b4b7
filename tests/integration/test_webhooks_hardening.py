"""Hostile-but-signed input and exposure of the webhook port (docs/webhooks.md,
docs/reliability.md): signatures only for the URL forms Twilio can produce, absurd
signed values refused with a 4xx (never a retried 5xx), /metrics on a listener of its
own, and a per-campaign metric label that does not grow without bound."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from twilio.request_validator import RequestValidator

from tests.integration.test_webhooks import (  # noqa: F401 - fixtures are requested by name
    SID,
    TOKEN,
    MakeServer,
    Server,
    insert_live_call,
    log_lines,
    make_server,
    real_server,
    snapshot,
    status_form,
)

LogLines = Any


async def test_a_signature_for_the_url_with_its_port_stripped_is_refused(make_server: MakeServer) -> None:
    """public_url http://host:8080: a signature computed for http://host (no port) is
    a 403 — it signs another address — while the configured form is accepted."""
    server = await make_server(public_url="http://dialer.example.com:8080")
    path = f"/twilio/status?call_id={uuid.uuid4()}"
    form = status_form()
    stripped = RequestValidator(TOKEN).compute_signature("http://dialer.example.com" + path, form)
    assert (await server.post(path, form, signature=stripped)).status == 403
    configured = RequestValidator(TOKEN).compute_signature("http://dialer.example.com:8080" + path, form)
    assert (await server.post(path, form, signature=configured)).status == 200


async def test_the_default_port_may_be_written_or_not(make_server: MakeServer) -> None:
    """public_url https://host: signatures for https://host/… and https://host:443/…
    are both accepted (Twilio uses either)."""
    server = await make_server(public_url="https://dialer.example.com")
    path = f"/twilio/status?call_id={uuid.uuid4()}"
    form = status_form()
    for signed_for in ("https://dialer.example.com", "https://dialer.example.com:443"):
        signature = RequestValidator(TOKEN).compute_signature(signed_for + path, form)
        assert (await server.post(path, form, signature=signature)).status == 200, signed_for


async def test_signed_absurd_values_are_400_and_change_nothing(
    real_server: Server, conn: asyncpg.Connection, log_lines: LogLines
) -> None:
    """A signed callback with a CallDuration, ErrorCode or SequenceNumber beyond 32
    bits, or a Timestamp in year 9999 or 1970, is answered 400 with a warning: no 503
    (which the carrier would retry forever), no database error counted, no row changed."""
    call = await insert_live_call(conn)
    before = await snapshot(conn)
    cases = [
        {"CallDuration": str(2**31)},
        {"CallDuration": str(2**70)},
        {"ErrorCode": str(2**31)},
        {"ErrorCode": str(-(2**40))},
        {"SequenceNumber": str(2**32)},
        {"Timestamp": "Fri, 31 Dec 9999 23:59:59 +0000"},
        {"Timestamp": "Thu, 01 Jan 1970 00:00:00 +0000"},
    ]
    for extra in cases:
        reply = await real_server.post(call.status_path, status_form(SID, "completed", **extra))
        assert reply.status == 400, extra
        field = next(iter(extra))
        assert reply.text == f"{field} out of range\n"
    assert await snapshot(conn) == before
    assert real_server.metric("dialer_db_errors_total") == 0
    assert real_server.metric("dialer_callbacks_total", {"result": "malformed"}) == len(cases)
    warnings = [line for line in log_lines() if line["event"] == "callback_malformed"]
    assert len(warnings) == len(cases)
    assert all(line["level"] == "warning" for line in warnings)
    # The largest values that fit are still taken.
    form = status_form(SID, "completed", CallDuration=str(2**31 - 1), ErrorCode="31005")
    assert (await real_server.post(call.status_path, form)).status == 200
    assert await conn.fetchval("SELECT duration FROM calls WHERE id = $1", call.call_id) == 2**31 - 1
