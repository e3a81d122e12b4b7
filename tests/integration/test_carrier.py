"""TwilioCarrier against the simulator: the real twilio package, real HTTP on loopback."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from dialer.carrier import DialRequest
from dialer.carrier.simulator import RunningSimulator
from dialer.carrier.twilio import ALL_STATUS_EVENTS, TwilioCarrier
from dialer.config import TwilioSettings
from dialer.errors import CarrierError
from tests.integration.carrier_helpers import ACCOUNT, FAST, FROM, TOKEN, Receiver, rec, sim  # noqa: F401 - fixtures used by name

TO = "+34911234567"


async def _carrier(
    base_url: str,
    *,
    token: str = TOKEN,
    request_timeout: float = 2.0,
    status_events: tuple[str, ...] | None = ALL_STATUS_EVENTS,
) -> TwilioCarrier:
    settings = TwilioSettings(
        account_sid=ACCOUNT, auth_token=SecretStr(token), api_base_url=base_url, request_timeout_seconds=request_timeout
    )
    return await TwilioCarrier.create(settings, status_events=status_events)


@pytest.fixture
async def carrier(sim: RunningSimulator) -> AsyncIterator[TwilioCarrier]:
    """A TwilioCarrier pointed at the simulator, asking for every status callback (these
    tests follow the simulator's whole Twilio sequence; the daemon asks for fewer)."""
    c = await _carrier(sim.url)
    yield c
    await c.close()


@pytest.mark.parametrize("outcome", ["answered", "busy", "no-answer"])
async def test_the_daemon_asks_only_for_the_final_callback(
    sim: RunningSimulator, rec: Receiver, outcome: str
) -> None:
    """By default a dial asks for the `completed` event only, and the simulator, as
    Twilio, then sends just the final callback, whatever the outcome."""
    sim.simulator.script(TO, [outcome])
    carrier = await _carrier(sim.url, status_events=None)
    try:
        call = await carrier.dial(_request(rec))
        await sim.simulator.wait_idle(5)
    finally:
        await carrier.close()
    assert sim.simulator.call(call.sid).params["StatusCallbackEvent"] == ["completed"]
    final = "completed" if outcome == "answered" else outcome
    assert rec.statuses() == [final]


def _request(rec: Receiver, to: str = TO, **extra: object) -> DialRequest:
    fields: dict[str, object] = {
        "to": to,
        "from_": FROM,
        "status_callback_url": rec.url + "/status",
        "twiml": "<Response><Say>hola</Say></Response>",
    }
    fields.update(extra)
    return DialRequest(**fields)  # type: ignore[arg-type]


async def test_dial_fetch_find_and_signed_callbacks(
    sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver
) -> None:
    """A dialed call is created, fetched, found by number and time, and its callbacks
    arrive in order, signed so that only the right token validates them."""
    sim.simulator.script(TO, ["answered"])
    since = datetime.now(UTC).replace(tzinfo=None)
    call = await carrier.dial(_request(rec))
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid)
    assert call.status == "queued"
    assert (call.to, call.from_) == (TO, FROM)
    assert call.date_created is not None and call.date_created.tzinfo is None

    await sim.simulator.wait_idle(5)
    fetched = await carrier.fetch(call.sid)
    assert fetched.status == "completed"
    assert isinstance(fetched.duration, int) and fetched.duration >= 1
    assert fetched.start_time is not None and fetched.end_time is not None

    assert [c.sid for c in await carrier.find(TO, since)] == [call.sid]
    assert await carrier.find(TO, since + timedelta(hours=1)) == []
    assert await carrier.find("+34911000000", since) == []

    hits = rec.at("/status")
    assert [h.params["CallStatus"] for h in hits] == ["initiated", "ringing", "in-progress", "completed"]
    assert [h.params["SequenceNumber"] for h in hits] == ["0", "1", "2", "3"]
    assert hits[-1].params["CallDuration"] == str(fetched.duration)
    good, bad = RequestValidator(TOKEN), RequestValidator("another-token")
    for hit in hits:
        assert hit.params["AccountSid"] == ACCOUNT
        assert hit.params["CallbackSource"] == "call-progress-events"
        assert good.validate(hit.url, hit.params, hit.signature)
        assert not bad.validate(hit.url, hit.params, hit.signature)
    sent = sim.simulator.call(call.sid)
    assert sent.param("StatusCallbackMethod") == "POST"
    assert sent.params["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert sent.twiml == "<Response><Say>hola</Say></Response>"


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("busy", ["initiated", "ringing", "busy"]),
        ("no-answer", ["initiated", "ringing", "no-answer"]),
        ("failed", ["initiated", "failed"]),
    ],
)
async def test_unanswered_outcome_sequences(
    sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver, outcome: str, expected: list[str]
) -> None:
    """busy, no-answer and failed play Twilio's callback sequences and end with that status."""
    sim.simulator.script(TO, [outcome])
    call = await carrier.dial(_request(rec))
    await sim.simulator.wait_idle(5)
    assert rec.statuses() == expected
    assert rec.at("/status")[-1].params["CallDuration"] == "0"
    assert (await carrier.fetch(call.sid)).status == outcome


async def test_scripted_outcomes_are_consumed_in_order(
    sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver
) -> None:
    """A script is used one outcome per call to the number; the last one repeats."""
    sim.simulator.script(TO, ["busy", "answered"])
    finals = []
    for _ in range(3):
        call = await carrier.dial(_request(rec))
        await sim.simulator.wait_idle(5)
        finals.append((await carrier.fetch(call.sid)).status)
    assert finals == ["busy", "completed", "completed"]
    assert sim.simulator.dials_to(TO) == 3


async def test_machine_detection_and_recording(
    sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver
) -> None:
    """With detection on, a machine is reported as AnsweredBy=machine_start; a recorded
    answered call gets a signed recording callback."""
    sim.simulator.script(TO, ["machine"])
    call = await carrier.dial(
        _request(rec, machine_detection=True, record=True, recording_callback_url=rec.url + "/recording")
    )
    await sim.simulator.wait_idle(5)
    answered = [h for h in rec.at("/status") if h.params["CallStatus"] in ("in-progress", "completed")]
    assert [h.params.get("AnsweredBy") for h in answered] == ["machine_start", "machine_start"]
    assert (await carrier.fetch(call.sid)).answered_by == "machine_start"
    (recording,) = rec.at("/recording")
    assert recording.params["CallSid"] == call.sid
    assert recording.params["RecordingStatus"] == "completed"
    assert recording.params["RecordingSid"].startswith("RE")
    assert recording.params["RecordingUrl"].startswith(sim.url)
    assert RequestValidator(TOKEN).validate(recording.url, recording.params, recording.signature)


async def test_twiml_url_is_fetched_on_answer(
    sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver
) -> None:
    """A call created with a TwiML URL POSTs to it (signed) on answer and keeps the body."""
    sim.simulator.script(TO, ["answered"])
    call = await carrier.dial(_request(rec, twiml=None, twiml_url=rec.url + "/twiml?call_id=abc"))
    await sim.simulator.wait_idle(5)
    (fetch,) = rec.at("/twiml")
    assert fetch.params["CallStatus"] == "in-progress"
    assert fetch.url.endswith("/twiml?call_id=abc")
    assert RequestValidator(TOKEN).validate(fetch.url, fetch.params, fetch.signature)
    assert sim.simulator.call(call.sid).twiml == rec.twiml_body


async def test_hangup_ends_a_live_call_early(
    sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver
) -> None:
    """Hanging up an answered call completes it at once, with a final callback."""
    sim.simulator.settings = FAST.model_copy(
        update={"min_duration_seconds": 100_000, "max_duration_seconds": 100_000}
    )
    sim.simulator.script(TO, ["answered"])
    call = await carrier.dial(_request(rec))
    record = sim.simulator.call(call.sid)
    for _ in range(500):  # bounded: at most ~5 s
        if record.status == "in-progress":
            break
        await asyncio.sleep(0.01)
    assert record.status == "in-progress"
    await carrier.hangup(call.sid)
    assert (await carrier.fetch(call.sid)).status == "completed"
    await sim.simulator.wait_idle(5)
    assert rec.statuses()[-1] == "completed"
    assert int(rec.at("/status")[-1].params["CallDuration"]) < 100_000


@pytest.mark.parametrize(
    ("outcome", "kind", "status", "code"),
    [
        ("error:400:21211", "permanent", 400, 21211),
        ("error:400:21217", "permanent", 400, 21217),
        ("error:400:21210", "rejected", 400, 21210),
        ("error:429", "transient", 429, 20429),
        ("error:500", "transient", 500, 20500),
        ("error:503", "transient", 503, 20503),
        ("error:502", "unknown", 502, 20502),
    ],
)
async def test_rest_errors_are_classified(
    sim: RunningSimulator,
    carrier: TwilioCarrier,
    rec: Receiver,
    outcome: str,
    kind: str,
    status: int,
    code: int,
) -> None:
    """Twilio error responses map onto the CarrierError kinds the engine acts on."""
    sim.simulator.script(TO, [outcome])
    with pytest.raises(CarrierError) as caught:
        await carrier.dial(_request(rec))
    assert (caught.value.kind, caught.value.status, caught.value.code) == (kind, status, code)
    assert sim.simulator.dials_to(TO) == 0


async def test_invalid_to_number_is_permanent(
    sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver
) -> None:
    """A To that is not E.164 is refused with 21211, as Twilio does: permanent."""
    with pytest.raises(CarrierError) as caught:
        await carrier.dial(_request(rec, to="12345"))
    assert (caught.value.kind, caught.value.code) == ("permanent", 21211)


async def test_hanging_create_is_unknown_and_never_dialed(sim: RunningSimulator, rec: Receiver) -> None:
    """A create that gets no answer before the timeout is 'unknown'; 'hang' placed no call."""
    sim.simulator.script(TO, ["hang"])
    carrier = await _carrier(sim.url, request_timeout=0.3)
    try:
        since = datetime.now(UTC).replace(tzinfo=None)
        with pytest.raises(CarrierError) as caught:
            await carrier.dial(_request(rec))
        assert caught.value.kind == "unknown"
        assert await carrier.find(TO, since) == []
    finally:
        await carrier.close()
    assert sim.simulator.dials_to(TO) == 0


async def test_accept_then_hang_is_unknown_and_found_by_find(sim: RunningSimulator, rec: Receiver) -> None:
    """A call created while its response never came is 'unknown' and then found by find()."""
    sim.simulator.script(TO, ["accept-then-hang"])
    carrier = await _carrier(sim.url, request_timeout=0.3)
    try:
        since = datetime.now(UTC).replace(tzinfo=None)
        with pytest.raises(CarrierError) as caught:
            await carrier.dial(_request(rec))
        assert caught.value.kind == "unknown"
        found = await carrier.find(TO, since)
        assert [c.sid for c in found] == [sim.simulator.calls[0].sid]
    finally:
        await carrier.close()
    await sim.simulator.wait_idle(5)
    assert rec.statuses()[-1] == "completed"


async def test_closed_port_is_transient(rec: Receiver) -> None:
    """Connection refused before anything was sent is transient, for create and fetch."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    carrier = await _carrier(f"http://127.0.0.1:{port}", request_timeout=1.0)
    try:
        with pytest.raises(CarrierError) as caught:
            await carrier.dial(_request(rec))
        assert caught.value.kind == "transient"
        with pytest.raises(CarrierError) as caught:
            await carrier.fetch("CA" + "0" * 32)
        assert caught.value.kind == "transient"
    finally:
        await carrier.close()


async def test_wrong_credentials_are_rejected(sim: RunningSimulator, rec: Receiver) -> None:
    """A wrong auth token gets Twilio's 401/20003, a rejected request."""
    carrier = await _carrier(sim.url, token="wrong-token")
    try:
        with pytest.raises(CarrierError) as caught:
            await carrier.dial(_request(rec))
    finally:
        await carrier.close()
    assert (caught.value.kind, caught.value.status, caught.value.code) == ("rejected", 401, 20003)
    assert sim.simulator.calls == []


async def test_fetch_and_hangup_of_unknown_sid_are_rejected(carrier: TwilioCarrier) -> None:
    """A sid the carrier does not know is a 404, reported as rejected."""
    for attempt in (carrier.fetch, carrier.hangup):
        with pytest.raises(CarrierError) as caught:
            await attempt("CA" + "f" * 32)
        assert (caught.value.kind, caught.value.status) == ("rejected", 404)


async def test_duplicate_final_knob(sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver) -> None:
    """duplicate_final=1 sends the final callback twice, identical."""
    sim.simulator.duplicate_final = 1.0
    sim.simulator.script(TO, ["busy"])
    await carrier.dial(_request(rec))
    await sim.simulator.wait_idle(5)
    hits = rec.at("/status")
    assert rec.statuses() == ["initiated", "ringing", "busy", "busy"]
    assert hits[-1].params == hits[-2].params


async def test_reorder_knob(sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver) -> None:
    """reorder=1 delivers every intermediate callback after the final one, with its
    original SequenceNumber."""
    sim.simulator.reorder = 1.0
    sim.simulator.script(TO, ["answered"])
    await carrier.dial(_request(rec))
    await sim.simulator.wait_idle(5)
    assert rec.statuses() == ["completed", "initiated", "ringing", "in-progress"]
    assert [h.params["SequenceNumber"] for h in rec.at("/status")] == ["3", "0", "1", "2"]


async def test_drop_knob(sim: RunningSimulator, carrier: TwilioCarrier, rec: Receiver) -> None:
    """drop=1 loses every status callback; the simulator records them as dropped."""
    sim.simulator.drop = 1.0
    call = await carrier.dial(_request(rec))
    await sim.simulator.wait_idle(5)
    assert rec.at("/status") == []
    record = sim.simulator.call(call.sid)
    assert record.status_callbacks() and all(c.dropped for c in record.status_callbacks())
    assert (await carrier.fetch(call.sid)).status in ("completed", "busy", "no-answer", "failed")
