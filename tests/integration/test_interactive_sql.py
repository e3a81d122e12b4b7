"""The SQL of interactive calls (sql/0014) on a real database: a key press recorded by
`dialer_apply_key`, and the response rules of `dialer_end_attempt` reached through
`dialer_apply_call_event` — one test per branch."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from dialer.models import ApplyResult, KeyPress
from dialer.store.lifecycle import LifecycleStore
from dialer.twiml import validate_template
from tests.factories import FakeClock, add_contacts, madrid_number, make_campaign
from tests.integration.webhook_helpers import snapshot

NOW = datetime(2026, 11, 25, 12, 0)
DIALED = NOW - timedelta(seconds=20)
SID = "CA" + "1" * 32
MENU = {
    "1": {"outcome": "confirmed", "say": "Gracias"},
    "2": {"outcome": "declined"},
    "0": {"action": "transfer", "to": "+34910000001"},
    "9": {"action": "opt_out"},
    "*": {"action": "repeat"},
}


@dataclass(frozen=True)
class Live:
    """A menu campaign with one contact whose call is in progress."""

    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    call_id: uuid.UUID
    number: str
    sid: str | None


async def _live(
    conn: asyncpg.Connection, *, status: str = "in_progress", call_sid: str | None = SID, **campaign: Any
) -> Live:
    fields: dict[str, Any] = {"status": "active", "max_retries": 2, "retry_delay_minutes": 10, "menu": MENU}
    fields.update(campaign)  # the connection's codec encodes the menu as jsonb
    cid = await make_campaign(conn, **fields)
    number = madrid_number(await conn.fetchval("SELECT count(*) FROM contacts") + 1)
    (contact_id,) = await add_contacts(conn, cid, [number])
    call_id = await conn.fetchval(
        "INSERT INTO calls (campaign_id, contact_id, status, call_sid, dialed_at, scheduled_at) "
        "VALUES ($1, $2, $3::call_status, $4, $5, $5) RETURNING id",
        cid,
        contact_id,
        status,
        call_sid,
        DIALED,
    )
    await conn.execute(
        "UPDATE campaign_contacts SET call_status = 'in_progress', call_count = $2 WHERE campaign_id = $1",
        cid,
        0 if status == "pending" else 1,
    )
    return Live(cid, contact_id, call_id, number, call_sid)


async def _key(
    conn: asyncpg.Connection, call_id: uuid.UUID, digit: str, keys: int = 0, sid: str = SID
) -> Any:
    return await conn.fetchrow(
        "SELECT * FROM dialer_apply_key($1, $2, $3, $4, $5)", call_id, sid, keys, digit, NOW
    )


async def _row(conn: asyncpg.Connection, live: Live) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        SELECT k.status::text AS status, k.response, k.digits, k.outcome, k.call_sid,
               cc.call_status, cc.call_count, cc.response AS cc_response, cc.responded_at
        FROM calls k JOIN campaign_contacts cc ON cc.campaign_id = k.campaign_id AND cc.contact_id = k.contact_id
        WHERE k.id = $1
        """,
        live.call_id,
    )
    assert row is not None
    return dict(row)


async def _end(
    conn: asyncpg.Connection, live: Live, answered_by: str | None = None, status: str = "completed"
) -> None:
    row = await conn.fetchrow(
        "SELECT * FROM dialer_apply_call_event($1, $2, $3, true, false, 12, $4, NULL, NULL, NULL, NULL, $5, $5)",
        live.call_id,
        live.sid or SID,
        status,
        answered_by,
        NOW,
    )
    assert row is not None and row["result"] == "applied"


async def test_an_outcome_key_records_the_label_on_call_and_contact(conn: asyncpg.Connection) -> None:
    """Key 1 → response confirmed, digits '1' on the call; the contact's response and
    responded_at; the status callback then completes the contact."""
    live = await _live(conn)
    got = await _key(conn, live.call_id, "1")
    assert (got["result"], got["recorded"]) == ("applied", "confirmed")
    row = await _row(conn, live)
    assert (row["status"], row["response"], row["digits"]) == ("in_progress", "confirmed", "1")
    assert (row["cc_response"], row["responded_at"]) == ("confirmed", NOW)
    await _end(conn, live)
    row = await _row(conn, live)
    assert (row["status"], row["response"], row["call_status"]) == ("completed", "confirmed", "completed")
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1  # no retry for an answer


async def test_presses_at_one_moment_share_one_statement_and_each_applies_as_alone(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Four presses handed to the store together (group commit): one statement; a
    confirmation, an opt-out with its do_not_call row, a press naming another sid
    (ignored) and a replay of the first press in the same batch (stale: ignored),
    each answered as it would be alone, with the menu the call says next."""
    store = LifecycleStore(
        pool, instance_id=uuid.uuid4(), validate_template=validate_template, clock=FakeClock(NOW)
    )
    a, b, c = [await _live(conn, call_sid=f"CA{n:032d}") for n in range(3)]
    presses = [
        (a.call_id, KeyPress(call_sid=a.sid or "", digit="1", keys=0, read=0)),
        (b.call_id, KeyPress(call_sid=b.sid or "", digit="9", keys=0, read=0)),
        (c.call_id, KeyPress(call_sid="CA-other", digit="1", keys=0, read=0)),
        (a.call_id, KeyPress(call_sid=a.sid or "", digit="1", keys=0, read=0)),
    ]
    results = await asyncio.gather(*(store.apply_key(call_id, press) for call_id, press in presses))
    assert [r.result for r in results] == [
        ApplyResult.APPLIED, ApplyResult.APPLIED, ApplyResult.IGNORED, ApplyResult.IGNORED
    ]
    assert (results[0].response, results[1].response) == ("confirmed", "opted_out")
    assert results[0].script is not None and results[0].script.menu == MENU
    assert results[0].script.contact.phone_number == a.number
    assert store._key_presses.statements == 1
    assert (await _row(conn, a))["digits"] == "1"
    assert (await _row(conn, c))["digits"] is None
    assert await conn.fetchval("SELECT count(*) FROM do_not_call WHERE phone_number = $1", b.number) == 1


async def test_opt_out_puts_the_number_on_do_not_call_at_once(conn: asyncpg.Connection) -> None:
    """Key 9 → opted_out, and a do_not_call row naming the campaign and the call, in the same transaction."""
    live = await _live(conn, name="Citas noviembre")
    got = await _key(conn, live.call_id, "9")
    assert got["recorded"] == "opted_out"
    reason = await conn.fetchval("SELECT reason FROM do_not_call WHERE phone_number = $1", live.number)
    assert reason is not None
    assert "Citas noviembre" in reason and str(live.campaign_id) in reason and str(live.call_id) in reason


async def test_opt_out_of_a_number_already_listed_keeps_the_first_reason(conn: asyncpg.Connection) -> None:
    """A number already on the list stays with its reason; the response is still recorded."""
    live = await _live(conn)
    await conn.execute(
        "INSERT INTO do_not_call (phone_number, reason) VALUES ($1, 'asked by letter')", live.number
    )
    assert (await _key(conn, live.call_id, "9"))["recorded"] == "opted_out"
    assert await conn.fetchval("SELECT reason FROM do_not_call") == "asked by letter"


async def test_transfer_records_transferred(conn: asyncpg.Connection) -> None:
    """Key 0 → transferred."""
    live = await _live(conn)
    assert (await _key(conn, live.call_id, "0"))["recorded"] == "transferred"
    assert (await _row(conn, live))["response"] == "transferred"


async def test_repeat_and_unknown_keys_record_only_the_key(conn: asyncpg.Connection) -> None:
    """* then 5 then 1: digits '*51', no response until 1, which is recorded."""
    live = await _live(conn)
    for keys, digit in enumerate("*5"):
        got = await _key(conn, live.call_id, digit, keys=keys)
        assert (got["result"], got["recorded"]) == ("applied", None)
    row = await _row(conn, live)
    assert (row["digits"], row["response"], row["cc_response"]) == ("*5", None, None)
    assert (await _key(conn, live.call_id, "1", keys=2))["recorded"] == "confirmed"
    assert (await _row(conn, live))["digits"] == "*51"


@pytest.mark.parametrize("case", ["replayed", "stale_count", "answered", "final", "sid_mismatch", "no_menu"])
async def test_a_press_that_cannot_apply_changes_nothing(conn: asyncpg.Connection, case: str) -> None:
    """Replayed, overtaken, after an answer, after the end, another sid, no menu: every table as it was."""
    live = await _live(conn, menu=None if case == "no_menu" else MENU)
    expected = "sid_mismatch" if case == "sid_mismatch" else "ignored"
    if case in ("replayed", "answered", "final"):
        assert (await _key(conn, live.call_id, "*" if case == "replayed" else "2"))["result"] == "applied"
    if case == "final":
        await _end(conn, live)
    before = await snapshot(conn)
    digit, keys, sid = {
        "replayed": ("*", 0, SID),
        "stale_count": ("1", 3, SID),
        "answered": ("1", 1, SID),
        "final": ("1", 1, SID),
        "sid_mismatch": ("1", 0, "CA" + "9" * 32),
        "no_menu": ("1", 0, SID),
    }[case]
    got = await _key(conn, live.call_id, digit, keys=keys, sid=sid)
    assert (got["result"], got["recorded"]) == (expected, None)
    assert await snapshot(conn) == before


async def test_an_unknown_call_is_unknown(conn: asyncpg.Connection) -> None:
    """A press for a call id no row has: 'unknown', nothing written."""
    before = await snapshot(conn)
    assert (await _key(conn, uuid.uuid4(), "1"))["result"] == "unknown"
    assert await snapshot(conn) == before


async def test_a_press_before_the_create_response_adopts_the_call(conn: asyncpg.Connection) -> None:
    """A pending call (sid not yet stored) is adopted by its first key: sid, in_progress, attempt counted once."""
    live = await _live(conn, status="pending", call_sid=None)
    assert (await _key(conn, live.call_id, "2"))["recorded"] == "declined"
    row = await _row(conn, live)
    assert (row["status"], row["call_sid"], row["call_count"], row["response"]) == (
        "in_progress",
        SID,
        1,
        "declined",
    )


async def test_a_menu_call_ended_without_an_answer_is_no_response(conn: asyncpg.Connection) -> None:
    """Completed with no key (or hung up mid-script) → no_response, contact completed, no retry by default."""
    live = await _live(conn)
    await _end(conn, live)
    row = await _row(conn, live)
    assert (row["status"], row["response"], row["call_status"], row["cc_response"]) == (
        "completed",
        "no_response",
        "completed",
        "no_response",
    )
    assert row["responded_at"] == NOW
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1


async def test_no_response_is_retried_when_the_campaign_says_so(conn: asyncpg.Connection) -> None:
    """retry_no_response: the call is completed, the contact scheduled with a retry row
    retry_delay_minutes later; with no retry left the contact is completed."""
    live = await _live(conn, retry_no_response=True, max_retries=1)
    await _end(conn, live)
    row = await _row(conn, live)
    assert (row["status"], row["response"], row["call_status"]) == ("completed", "no_response", "scheduled")
    retry = await conn.fetchrow(
        "SELECT retry_count, scheduled_at, status::text AS st FROM calls WHERE id <> $1", live.call_id
    )
    assert retry is not None and dict(retry) == {
        "retry_count": 1,
        "scheduled_at": NOW + timedelta(minutes=10),
        "st": "scheduled",
    }
    last = await _live(conn, retry_no_response=True, max_retries=0, call_sid="CA" + "2" * 32)
    await _end(conn, last)
    assert (await _row(conn, last))["call_status"] == "completed"


async def test_an_answer_is_never_retried_even_with_retry_no_response(conn: asyncpg.Connection) -> None:
    """retry_no_response concerns no_response only: a confirmed contact is done."""
    live = await _live(conn, retry_no_response=True)
    await _key(conn, live.call_id, "1")
    await _end(conn, live)
    assert (await _row(conn, live))["call_status"] == "completed"
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1


async def test_a_recorded_answer_completes_the_attempt_whatever_the_carrier_says(
    conn: asyncpg.Connection,
) -> None:
    """A contact who answered is never called again: a later 'failed' final status still completes."""
    live = await _live(conn)
    await _key(conn, live.call_id, "2")
    await _end(conn, live, status="failed")
    row = await _row(conn, live)
    assert (row["status"], row["call_status"], row["response"]) == ("completed", "completed", "declined")
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1


async def test_a_machine_takes_the_voicemail_message(conn: asyncpg.Connection) -> None:
    """machine_detection + voicemail_template, AnsweredBy machine_end_beep → voicemail, completed,
    even where machines otherwise count as failures."""
    live = await _live(conn, machine_detection=True, machine_is_failure=True, voicemail_template="Hola")
    await _end(conn, live, answered_by="machine_end_beep")
    row = await _row(conn, live)
    assert (row["status"], row["outcome"], row["response"], row["call_status"], row["cc_response"]) == (
        "completed",
        "machine",
        "voicemail",
        "completed",
        "voicemail",
    )


async def test_answered_by_from_an_earlier_event_counts(conn: asyncpg.Connection) -> None:
    """The final callback without AnsweredBy still ends as voicemail when the row holds a machine answer."""
    live = await _live(conn, menu=None, machine_detection=True, voicemail_template="Hola")
    await conn.execute("UPDATE calls SET answered_by = 'machine_end_silence' WHERE id = $1", live.call_id)
    await _end(conn, live)
    assert (await _row(conn, live))["response"] == "voicemail"


async def test_without_a_voicemail_message_machine_is_failure_decides(conn: asyncpg.Connection) -> None:
    """No voicemail_template: a machine with machine_is_failure fails and is retried, as before."""
    live = await _live(conn, menu=None, machine_detection=True, machine_is_failure=True)
    await _end(conn, live, answered_by="machine_start")
    row = await _row(conn, live)
    assert (row["status"], row["outcome"], row["response"], row["call_status"]) == (
        "failed",
        "machine",
        None,
        "scheduled",
    )


async def test_a_one_way_call_records_no_response(conn: asyncpg.Connection) -> None:
    """A campaign without a menu keeps response null: it asked nothing."""
    live = await _live(conn, menu=None)
    await _end(conn, live)
    row = await _row(conn, live)
    assert (row["status"], row["response"], row["cc_response"]) == ("completed", None, None)


async def test_menu_repeats_is_bounded(conn: asyncpg.Connection) -> None:
    """menu_repeats outside 0..10 is refused by the schema, naming the constraint."""
    with pytest.raises(asyncpg.CheckViolationError, match="campaigns_menu_repeats_check"):
        await make_campaign(conn, menu_repeats=11)


async def test_the_dial_gate_refuses_a_number_listed_after_its_claim(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Invariant 8: a number put on do_not_call (an opt-out elsewhere) between claim and
    dial is not dialed; the handed-back call is cancelled by the next claim, the contact do_not_call."""
    store = LifecycleStore(
        pool, instance_id=uuid.uuid4(), validate_template=validate_template, clock=FakeClock(NOW)
    )
    await store.register_instance()
    cid = await make_campaign(conn, status="active", menu=MENU)
    number = madrid_number(1)
    await add_contacts(conn, cid, [number])
    assert await store.housekeep()
    (campaign,) = await store.dialable_campaigns()
    (call,) = await store.claim(campaign, 10)
    await conn.execute(
        "INSERT INTO do_not_call (phone_number, reason) VALUES ($1, 'opted out elsewhere')", number
    )
    assert not await store.begin_dial(call.id)
    await store.release_claim(call.id)
    assert await store.claim(campaign, 10) == []
    row = await conn.fetchrow(
        "SELECT k.status::text AS st, k.dialed_at, cc.call_status FROM calls k "
        "JOIN campaign_contacts cc ON cc.contact_id = k.contact_id WHERE k.id = $1",
        call.id,
    )
    assert row is not None and (row["st"], row["dialed_at"], row["call_status"]) == (
        "cancelled",
        None,
        "do_not_call",
    )
