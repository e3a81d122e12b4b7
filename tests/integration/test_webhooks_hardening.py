"""Hostile-but-signed input and exposure of the webhook port (docs/webhooks.md,
docs/reliability.md): signatures only for the URL forms Twilio can produce, absurd
signed values refused with a 4xx (never a retried 5xx), /metrics on a listener of its
own, and a per-campaign metric label that does not grow without bound."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import asyncpg
from twilio.request_validator import RequestValidator

from dialer.carrier.simulator import RunningSimulator
from dialer.service import Daemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import daemon_settings, free_port, wait_for
from tests.integration.webhook_helpers import SID, insert_live_call, real_server, snapshot  # noqa: F401
from tests.webhook_harness import (  # noqa: F401 - fixtures are requested by name
    TOKEN,
    MakeServer,
    Server,
    log_lines,
    make_server,
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
    bits, a Timestamp in year 9999 or 1970, or a NUL in a text field (PostgreSQL text
    cannot hold one) is answered 400 with a warning: no 503 (which the carrier would
    retry forever), no database error counted, no row changed."""
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
        {"AnsweredBy": "human\x00"},
        {"ErrorMessage": "a\x00b"},
        {"CallStatus": "completed\x00"},
    ]
    for extra in cases:
        reply = await real_server.post(call.status_path, status_form(SID, "completed", **extra))
        assert reply.status == 400, extra
        field = next(iter(extra))
        reason = "contains a NUL character" if "\x00" in extra[field] else "out of range"
        assert reply.text == f"{field} {reason}\n"
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


async def _metrics_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def test_metrics_can_have_a_listener_of_their_own(db_url: str, sim: RunningSimulator) -> None:
    """With http.metrics_port set, /metrics answers there and 404 on the public port,
    where the callbacks and probes still are."""
    metrics_port = free_port()
    settings = daemon_settings(db_url, sim.url)
    settings = settings.model_copy(
        update={"http": settings.http.model_copy(update={"metrics_port": metrics_port})}
    )
    daemon = Daemon(settings, db_url=db_url)
    await daemon.start()
    try:
        public = f"http://127.0.0.1:{daemon.http_port}"
        status, text = await _metrics_text(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and "dialer_live_calls" in text
        assert (await _metrics_text(f"{public}/metrics"))[0] == 404
        assert (await _metrics_text(f"{public}/healthz"))[0] == 200
        assert (await _metrics_text(f"http://127.0.0.1:{metrics_port}/healthz"))[0] == 404
    finally:
        await daemon.stop(drain_seconds=1)


async def test_metrics_on_the_main_listener_by_default(db_url: str, sim: RunningSimulator) -> None:
    """Without http.metrics_port, /metrics is served on the main listener as before."""
    daemon = Daemon(daemon_settings(db_url, sim.url), db_url=db_url)
    await daemon.start()
    try:
        status, text = await _metrics_text(f"http://127.0.0.1:{daemon.http_port}/metrics")
        assert status == 200 and "dialer_live_calls" in text
    finally:
        await daemon.stop(drain_seconds=1)


async def test_a_finished_campaign_leaves_the_metric_labels(
    db_url: str, sim: RunningSimulator, conn: asyncpg.Connection
) -> None:
    """dialer_dials_total{campaign_id} carries a campaign while it is dialed and drops
    it once the campaign is completed, and so does dialer_call_outcomes_total, so the
    label is bounded by live campaigns."""
    daemon = Daemon(daemon_settings(db_url, sim.url, calls_per_second=4.0, bucket_size=1), db_url=db_url)
    await daemon.start()
    try:
        campaign = await make_campaign(conn, status="active")
        await add_contacts(conn, campaign, [madrid_number(i) for i in range(3)])
        registry = daemon.metrics.registry

        def dials() -> float | None:
            value = registry.get_sample_value("dialer_dials_total", {"campaign_id": str(campaign)})
            return None if value is None else float(value)

        async def labelled() -> bool:
            return dials() is not None

        async def completed() -> bool:
            status = await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", campaign)
            return bool(status == "completed")

        async def unlabelled() -> bool:
            return dials() is None

        await wait_for(labelled, 10, "the campaign's first dial to be counted", interval=0.01)
        await wait_for(completed, 20, "the campaign to complete")
        await wait_for(unlabelled, 5, "the finished campaign's series to go")
        await asyncio.sleep(0.3)  # and it stays gone
        assert dials() is None
        assert f'campaign_id="{campaign}"'.encode() not in daemon.metrics.render()  # outcomes too
    finally:
        await daemon.stop(drain_seconds=1)
