"""/twilio/gather over real HTTP in front of the real store on a real database: signed
key presses recorded once, answered with TwiML; forged, replayed, late and unknown
presses change nothing and are still answered (docs/webhooks.md#routes)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from dialer.metrics import Metrics
from dialer.store.lifecycle import LifecycleStore
from dialer.twiml import CallRequests, gather_url, validate_template
from dialer.webhooks import WebhookDeps, bound_port, create_app, serve
from tests.integration.webhook_helpers import insert_live_call as _insert_live_call
from tests.integration.webhook_helpers import snapshot
from tests.webhook_harness import PUBLIC_URL, TOKEN, log_lines, sign

__all__ = ["log_lines"]  # the fixture, used below

SID = "CA" + "a" * 32
MENU = {
    "1": {"outcome": "confirmed", "say": "Gracias {{first_name}}."},
    "9": {"action": "opt_out", "say": "No volveremos a llamarle."},
    "0": {"action": "transfer", "to": "+34910000001"},
    "*": {"action": "repeat"},
}


@dataclass
class Gather:
    """The webhook app with the real store and request builder, and a client."""

    base: str
    session: aiohttp.ClientSession
    metrics: Metrics

    async def press(
        self, call_id: uuid.UUID | str, digit: str, *, read: int = 0, keys: int = 0, **kw: Any
    ) -> tuple[int, str]:
        """POST one key press as Twilio would, signed unless `signature` says otherwise."""
        url = gather_url(PUBLIC_URL, call_id, read=read, keys=keys)  # type: ignore[arg-type]
        path = url.removeprefix(PUBLIC_URL)
        form = {"CallSid": kw.pop("sid", SID), "Digits": digit, "AccountSid": "AC" + "0" * 32}
        form.update(kw.pop("form", {}))
        signature = kw.pop("signature", None) or sign(path, form)
        async with self.session.post(
            self.base + path, data=form, headers={"X-Twilio-Signature": signature}
        ) as r:
            return r.status, await r.text()


@pytest.fixture
async def gather(pool: asyncpg.Pool) -> AsyncIterator[Gather]:
    """A webhook app whose key presses go through CallRequests.answer_key to the real store."""
    store = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=validate_template)
    requests = CallRequests(
        public_url=PUBLIC_URL,
        voice="alice",
        language="es-ES",
        lookup=store.call_for_twiml,
        record_key=store.apply_key,
    )
    metrics = Metrics()

    async def ready() -> bool:
        return True

    deps = WebhookDeps(
        store=store,
        auth_token=TOKEN,
        public_url=PUBLIC_URL,
        metrics=metrics,
        max_body_bytes=64 * 1024,
        is_ready=ready,
        render_twiml=requests.document,
        answer_key=requests.answer_key,
    )
    async with AsyncExitStack() as stack:
        runner = await serve(create_app(deps), "127.0.0.1", 0)
        stack.push_async_callback(runner.cleanup)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield Gather(f"http://127.0.0.1:{bound_port(runner)}", session, metrics)


async def _menu_call(conn: asyncpg.Connection) -> uuid.UUID:
    call = await _insert_live_call(conn, sid=SID)
    await conn.execute("UPDATE campaigns SET menu = $1 WHERE id = $2", MENU, call.campaign_id)
    await conn.execute("UPDATE contacts SET first_name = 'Ana <b>&' WHERE id = $1", call.contact_id)
    return call.call_id


def _verbs(document: str) -> list[str]:
    return [el.tag for el in ET.fromstring(document)]


async def test_a_signed_press_is_recorded_and_answered_with_the_keys_document(
    gather: Gather, conn: asyncpg.Connection
) -> None:
    """Key 1: 200 text/xml saying the escaped thanks and hanging up; the call holds confirmed and '1'."""
    call_id = await _menu_call(conn)
    status, text = await gather.press(call_id, "1")
    assert status == 200
    assert _verbs(text) == ["Say", "Hangup"]
    assert ET.fromstring(text).findtext("Say") == "Gracias Ana <b>&."
    row = await conn.fetchrow("SELECT response, digits FROM calls WHERE id = $1", call_id)
    assert row is not None and (row["response"], row["digits"]) == ("confirmed", "1")
    assert gather.metrics.registry.get_sample_value("dialer_key_presses_total", {"result": "applied"}) == 1


async def test_the_answer_reads_the_campaigns_own_fields_first(gather: Gather, conn: asyncpg.Connection) -> None:
    """A `say` with {{custom.cita}} speaks the contact's field in this campaign
    (campaign_contacts.fields), not the contact's custom_fields, as the script does."""
    call = await _insert_live_call(conn, sid=SID)
    menu = {"1": {"outcome": "confirmed", "say": "Hasta el {{custom.cita}}."}}
    await conn.execute("UPDATE campaigns SET menu = $1 WHERE id = $2", menu, call.campaign_id)
    await conn.execute(
        "UPDATE contacts SET custom_fields = '{\"cita\": \"lunes\"}' WHERE id = $1", call.contact_id
    )
    await conn.execute(
        "UPDATE campaign_contacts SET fields = '{\"Cita\": \"martes\"}' WHERE contact_id = $1", call.contact_id
    )
    status, text = await gather.press(call.call_id, "1")
    assert status == 200
    assert ET.fromstring(text).findtext("Say") == "Hasta el martes."


async def test_repeat_then_an_answer_across_two_requests(gather: Gather, conn: asyncpg.Connection) -> None:
    """* answers the script again with keys=1 in its action URLs; that URL's 1 is then recorded."""
    call_id = await _menu_call(conn)
    status, text = await gather.press(call_id, "*")
    assert status == 200 and _verbs(text) == ["Gather", "Gather"]
    action = ET.fromstring(text).find("Gather")
    assert action is not None and "keys=1" in (action.get("action") or "")
    status, text = await gather.press(call_id, "1", keys=1)
    assert status == 200 and _verbs(text) == ["Say", "Hangup"]
    assert await conn.fetchval("SELECT digits FROM calls WHERE id = $1", call_id) == "*1"


@pytest.mark.parametrize("case", ["forged", "unsigned", "other_call", "other_count"])
async def test_a_forged_press_is_403_and_changes_nothing(
    gather: Gather, conn: asyncpg.Connection, case: str
) -> None:
    """A wrong signature — or one made for another URL (call id, key count) — is 403; every table as it was."""
    call_id = await _menu_call(conn)
    before = await snapshot(conn)
    form = {"CallSid": SID, "Digits": "9", "AccountSid": "AC" + "0" * 32}
    other_call = gather_url(PUBLIC_URL, uuid.uuid4(), read=0, keys=0).removeprefix(PUBLIC_URL)
    other_count = gather_url(PUBLIC_URL, call_id, read=0, keys=5).removeprefix(PUBLIC_URL)
    signature = {
        "forged": "bm90IGEgc2lnbmF0dXJl",
        "unsigned": "",
        "other_call": sign(other_call, form),
        "other_count": sign(other_count, form),
    }[case]
    path = gather_url(PUBLIC_URL, call_id, read=0, keys=0).removeprefix(PUBLIC_URL)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    async with gather.session.post(gather.base + path, data=form, headers=headers) as reply:
        assert reply.status == 403
    assert await snapshot(conn) == before


async def test_a_replayed_or_late_press_changes_nothing_and_still_answers_twiml(
    gather: Gather, conn: asyncpg.Connection
) -> None:
    """The same signed request again, or a press after the call ended: 200, valid TwiML, no row changed."""
    call_id = await _menu_call(conn)
    assert (await gather.press(call_id, "9"))[0] == 200
    before = await snapshot(conn)
    status, text = await gather.press(call_id, "9")
    assert status == 200 and _verbs(text) == ["Hangup"]
    assert await snapshot(conn) == before
    await conn.execute("UPDATE calls SET status = 'completed', ended_at = now() WHERE id = $1", call_id)
    before = await snapshot(conn)
    status, text = await gather.press(call_id, "1", keys=1)
    assert status == 200 and _verbs(text) == ["Hangup"]
    assert await snapshot(conn) == before
    assert gather.metrics.registry.get_sample_value("dialer_key_presses_total", {"result": "ignored"}) == 2


@pytest.mark.parametrize("call_id", ["unknown", "mangled"])
async def test_a_press_for_an_unknown_call_is_acknowledged_and_logged(
    gather: Gather, conn: asyncpg.Connection, log_lines: Callable[[], list[dict[str, Any]]], call_id: str
) -> None:
    """No such call (or no usable call id): 200 with a hang-up, a gather_unknown_call line, nothing written."""
    before = await snapshot(conn)
    target = str(uuid.uuid4()) if call_id == "unknown" else "not-a-uuid"
    status, text = await gather.press(target, "1")
    assert status == 200 and _verbs(text) == ["Hangup"]
    assert any(line["event"] == "gather_unknown_call" for line in log_lines())
    assert await snapshot(conn) == before


@pytest.mark.parametrize(
    ("form", "query", "reason"),
    [
        ({"Digits": "12"}, None, "Digits is not one keypad key"),
        ({"Digits": ""}, None, "Digits is not one keypad key"),
        ({"Digits": "x"}, None, "Digits is not one keypad key"),
        ({"CallSid": ""}, None, "missing CallSid"),
        ({}, "?call_id={id}&read=0", "keys is not a small whole number"),
        ({}, "?call_id={id}&read=-1&keys=0", "read is not a small whole number"),
        ({}, "?call_id={id}&read=0&keys=99999", "keys is not a small whole number"),
    ],
)
async def test_a_signed_press_of_the_wrong_shape_is_400(
    gather: Gather, conn: asyncpg.Connection, form: dict[str, str], query: str | None, reason: str
) -> None:
    """Signed but unusable (not one key, no CallSid, counters missing or absurd): 400 naming why, nothing written."""
    call_id = await _menu_call(conn)
    before = await snapshot(conn)
    path = f"/twilio/gather{query.format(id=call_id)}" if query else None
    full = {"CallSid": SID, "Digits": "1"}
    full.update(form)
    if path is None:
        path = gather_url(PUBLIC_URL, call_id, read=0, keys=0).removeprefix(PUBLIC_URL)
    async with gather.session.post(
        gather.base + path, data=full, headers={"X-Twilio-Signature": sign(path, full)}
    ) as reply:
        assert reply.status == 400
        assert reason in await reply.text()
    assert await snapshot(conn) == before


async def test_the_twiml_url_answers_by_answered_by(gather: Gather, conn: asyncpg.Connection) -> None:
    """/twilio/twiml for a voicemail campaign: a machine gets the message, a human the menu."""
    call_id = await _menu_call(conn)
    await conn.execute(
        "UPDATE campaigns SET machine_detection = true, voicemail_template = 'Mensaje para {{first_name}}'"
    )
    path = f"/twilio/twiml?call_id={call_id}"
    for answered_by, verbs in (("machine_end_beep", ["Say", "Hangup"]), ("human", ["Gather", "Gather"])):
        form = {"CallSid": SID, "AnsweredBy": answered_by}
        async with gather.session.post(
            gather.base + path, data=form, headers={"X-Twilio-Signature": sign(path, form)}
        ) as reply:
            assert reply.status == 200
            assert _verbs(await reply.text()) == verbs
