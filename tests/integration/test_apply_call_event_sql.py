"""The SQL functions that apply carrier events and end attempts (sql/0007, sql/0009)
called directly on a real database, one test per branch: the store's own tests pin
the behaviour through the Python API; these pin the functions themselves, so a change
to them cannot hide behind the wrapper."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.factories import add_contacts, madrid_number, make_campaign
from tests.invariants import assert_counters_true

NOW = datetime(2026, 11, 25, 12, 0)
DIALED = NOW - timedelta(seconds=20)


@dataclass(frozen=True)
class Seeded:
    """One campaign, one contact, one call row in a chosen state."""

    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    call_id: uuid.UUID


async def _seed(
    conn: asyncpg.Connection,
    *,
    status: str = "in_progress",
    call_sid: str | None = "CA1",
    retry_count: int = 0,
    **campaign: Any,
) -> Seeded:
    fields: dict[str, Any] = {"status": "active", "max_retries": 2, "retry_delay_minutes": 10}
    fields.update(campaign)
    cid = await make_campaign(conn, **fields)
    n = await conn.fetchval("SELECT count(*) FROM contacts")
    (contact_id,) = await add_contacts(conn, cid, [madrid_number(n + 1)])
    call_id: uuid.UUID = await conn.fetchval(
        """
        INSERT INTO calls (campaign_id, contact_id, status, call_sid, retry_count, dialed_at, scheduled_at)
        VALUES ($1, $2, $3::call_status, $4, $5, $6, $6) RETURNING id
        """,
        cid,
        contact_id,
        status,
        call_sid,
        retry_count,
        DIALED,
    )
    await conn.execute(
        "UPDATE campaign_contacts SET call_status = 'in_progress', call_count = $2 WHERE campaign_id = $1",
        cid,
        0 if status == "pending" else 1,
    )
    return Seeded(cid, contact_id, call_id)


async def _apply(
    conn: asyncpg.Connection,
    call_id: uuid.UUID | None,
    sid: str,
    status: str,
    *,
    final: bool | None = None,
    permanent: bool = False,
    duration: int | None = None,
    answered_by: str | None = None,
    error_code: int | None = None,
    error_message: str | None = None,
    timestamp: datetime | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> asyncpg.Record:
    is_final = final if final is not None else status in ("completed", "busy", "no-answer", "failed", "canceled")
    row = await conn.fetchrow(
        "SELECT * FROM dialer_apply_call_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        call_id,
        sid,
        status,
        is_final,
        permanent,
        duration,
        answered_by,
        error_code,
        error_message,
        timestamp,
        start_time,
        end_time,
        NOW,
    )
    assert row is not None
    return row


async def _call(conn: asyncpg.Connection, call_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT *, status::text AS st FROM calls WHERE id = $1", call_id)
    assert row is not None
    return row


async def _disposition(conn: asyncpg.Connection, s: Seeded) -> tuple[str, int]:
    row = await conn.fetchrow(
        "SELECT call_status, call_count FROM campaign_contacts WHERE campaign_id = $1", s.campaign_id
    )
    assert row is not None
    return row["call_status"], row["call_count"]


async def test_unknown_call(conn: asyncpg.Connection) -> None:
    """Neither the id nor the sid names a call: unknown, nothing written."""
    await _seed(conn)
    row = await _apply(conn, uuid.uuid4(), "CAnobody", "ringing")
    assert (row["result"], row["call_id"]) == ("unknown", None)
    row = await _apply(conn, None, "CAnobody", "completed")
    assert row["result"] == "unknown"


async def test_found_by_sid_when_the_id_is_absent_or_unknown(conn: asyncpg.Connection) -> None:
    """The id is tried first; failing it, the CallSid finds the call."""
    s = await _seed(conn)
    row = await _apply(conn, uuid.uuid4(), "CA1", "ringing")
    assert (row["result"], row["call_id"]) == ("applied", s.call_id)
    assert (await _call(conn, s.call_id))["last_event_at"] == NOW


async def test_sid_mismatch_touches_nothing(conn: asyncpg.Connection) -> None:
    """A call already bound to another sid is not changed; the stored sid is returned."""
    s = await _seed(conn)
    before = await _call(conn, s.call_id)
    row = await _apply(conn, s.call_id, "CAother", "completed")
    assert (row["result"], row["expected_sid"]) == ("sid_mismatch", "CA1")
    after = await _call(conn, s.call_id)
    assert (after["st"], after["updated_at"]) == ("in_progress", before["updated_at"])


async def test_final_and_scheduled_calls_are_ignored(conn: asyncpg.Connection) -> None:
    """Status moves forward only: a final call never changes; a handed-back one is not ours."""
    s = await _seed(conn)
    assert (await _apply(conn, s.call_id, "CA1", "completed", duration=5))["result"] == "applied"
    for status in ("completed", "busy", "ringing"):
        assert (await _apply(conn, s.call_id, "CA1", status))["result"] == "ignored"
    assert (await _call(conn, s.call_id))["st"] == "completed"
    cid2 = await make_campaign(conn, status="active")
    (contact,) = await add_contacts(conn, cid2, [madrid_number(99)])
    scheduled = await conn.fetchval(
        "INSERT INTO calls (campaign_id, contact_id) VALUES ($1, $2) RETURNING id", cid2, contact
    )
    assert (await _apply(conn, scheduled, "CA2", "ringing"))["result"] == "ignored"
    assert (await _call(conn, scheduled))["call_sid"] is None


async def test_pending_call_is_adopted_once(conn: asyncpg.Connection) -> None:
    """A non-final event for a pending call adopts it: in_progress with the sid, the
    attempt counted once at dialed_at; started_at and answered_by from in-progress."""
    s = await _seed(conn, status="pending", call_sid=None)
    assert (await _apply(conn, s.call_id, "CA7", "initiated"))["result"] == "applied"
    call = await _call(conn, s.call_id)
    assert (call["st"], call["call_sid"], call["last_event_at"]) == ("in_progress", "CA7", NOW)
    assert await _disposition(conn, s) == ("in_progress", 1)
    assert await conn.fetchval("SELECT last_call_at FROM campaign_contacts") == DIALED
    answered = NOW - timedelta(seconds=3)
    await _apply(conn, s.call_id, "CA7", "in-progress", timestamp=answered, answered_by="human")
    call = await _call(conn, s.call_id)
    assert (call["started_at"], call["answered_by"]) == (answered, "human")
    await _apply(conn, s.call_id, "CA7", "in-progress", timestamp=NOW)  # started_at stays
    assert (await _call(conn, s.call_id))["started_at"] == answered
    assert await _disposition(conn, s) == ("in_progress", 1)
    await assert_counters_true(conn, s.campaign_id)


async def test_pending_call_adopted_by_its_final_event(conn: asyncpg.Connection) -> None:
    """A final event for a pending call adopts and finishes it in the same call."""
    s = await _seed(conn, status="pending", call_sid=None)
    assert (await _apply(conn, s.call_id, "CA8", "completed", duration=9, end_time=NOW))["result"] == "applied"
    call = await _call(conn, s.call_id)
    assert (call["st"], call["call_sid"], call["duration"]) == ("completed", "CA8", 9)
    assert call["started_at"] == NOW - timedelta(seconds=9)  # derived from the duration
    assert await _disposition(conn, s) == ("completed", 1)
    await assert_counters_true(conn, s.campaign_id)


async def test_completed_keeps_start_time_and_error_fields(conn: asyncpg.Connection) -> None:
    """An explicit start time wins over the derived one; ended_at falls back to the
    timestamp, then the caller's clock."""
    s = await _seed(conn)
    start = NOW - timedelta(minutes=1)
    stamp = NOW - timedelta(seconds=1)
    await _apply(conn, s.call_id, "CA1", "completed", duration=30, start_time=start, timestamp=stamp)
    call = await _call(conn, s.call_id)
    assert (call["started_at"], call["ended_at"], call["last_event_at"]) == (start, stamp, stamp)
    assert call["outcome"] == "completed"
    s2 = await _seed(conn, name="second", call_sid="CA2")
    await _apply(conn, s2.call_id, "CA2", "failed", error_code=31005, error_message="gateway")
    call = await _call(conn, s2.call_id)
    assert (call["ended_at"], call["error_code"], call["error_message"], call["outcome"]) == (
        NOW,
        31005,
        "gateway",
        "failed",
    )
    assert call["started_at"] is None  # a failed call has no derived start


async def test_machine_answers(conn: asyncpg.Connection) -> None:
    """A machine is a success unless the campaign treats it as a failure (then retried)."""
    ok = await _seed(conn, machine_is_failure=False)
    await _apply(conn, ok.call_id, "CA1", "completed", duration=4, answered_by="machine_start", end_time=NOW)
    call = await _call(conn, ok.call_id)
    assert (call["st"], call["outcome"], call["answered_by"]) == ("completed", "machine", "machine_start")
    assert await _disposition(conn, ok) == ("completed", 1)
    bad = await _seed(conn, name="strict", call_sid="CA2", machine_is_failure=True)
    await _apply(conn, bad.call_id, "CA2", "completed", duration=4, answered_by="machine_end_beep", end_time=NOW)
    call = await _call(conn, bad.call_id)
    assert (call["st"], call["outcome"]) == ("failed", "machine")
    assert await _disposition(conn, bad) == ("scheduled", 1)
    await assert_counters_true(conn, bad.campaign_id)


async def test_failure_with_retries_left_schedules_the_next_attempt(conn: asyncpg.Connection) -> None:
    """busy with retries left, campaign active or paused: a retry row at ended_at +
    retry_delay_minutes with retry_count + 1; the contact is scheduled."""
    for campaign_status in ("active", "paused"):
        s = await _seed(conn, name=campaign_status, status="in_progress", call_sid=f"CA-{campaign_status}")
        await conn.execute("UPDATE campaigns SET status = $2 WHERE id = $1", s.campaign_id, campaign_status)
        ended = NOW - timedelta(seconds=5)
        await _apply(conn, s.call_id, f"CA-{campaign_status}", "busy", end_time=ended)
        assert (await _call(conn, s.call_id))["outcome"] == "busy"
        retry = await conn.fetchrow(
            "SELECT status::text, retry_count, scheduled_at FROM calls WHERE campaign_id = $1 AND id <> $2",
            s.campaign_id,
            s.call_id,
        )
        assert retry is not None
        assert tuple(retry) == ("scheduled", 1, ended + timedelta(minutes=10))
        assert await _disposition(conn, s) == ("scheduled", 1)
        await assert_counters_true(conn, s.campaign_id)


async def test_failure_when_the_campaign_is_over_cancels_the_contact(conn: asyncpg.Connection) -> None:
    """Retries left but the campaign cancelled, or the retry would fall after
    schedule_end: no retry row, the contact is cancelled."""
    cancelled = await _seed(conn, name="cancelled")
    await conn.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = $1", cancelled.campaign_id)
    await _apply(conn, cancelled.call_id, "CA1", "no-answer", end_time=NOW)
    assert await _disposition(conn, cancelled) == ("cancelled", 1)
    ending = await _seed(conn, name="ending", call_sid="CA2", schedule_end=NOW + timedelta(minutes=5))
    await _apply(conn, ending.call_id, "CA2", "no-answer", end_time=NOW)
    assert await _disposition(conn, ending) == ("cancelled", 1)
    assert await conn.fetchval("SELECT count(*) FROM calls") == 2  # no retry rows


async def test_failure_without_retries_left_is_final(conn: asyncpg.Connection) -> None:
    """The last attempt failing makes the contact failed, with no new row."""
    s = await _seed(conn, max_retries=1, retry_count=1)
    await _apply(conn, s.call_id, "CA1", "no-answer", end_time=NOW)
    assert await _disposition(conn, s) == ("failed", 1)
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1
    await assert_counters_true(conn, s.campaign_id)


async def test_permanent_error_makes_the_number_invalid(conn: asyncpg.Connection) -> None:
    """A permanent carrier error is final at once, retries left or not."""
    s = await _seed(conn)
    await _apply(conn, s.call_id, "CA1", "failed", permanent=True, error_code=21211, end_time=NOW)
    assert await _disposition(conn, s) == ("invalid_number", 1)
    call = await _call(conn, s.call_id)
    assert (call["st"], call["error_code"]) == ("failed", 21211)
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1


async def _dial_failed(
    conn: asyncpg.Connection,
    call_id: uuid.UUID,
    intent: str,
    *,
    code: int | None = None,
    message: str = "refused",
    now: datetime = NOW,
) -> str:
    outcome = f"error:{code}" if code else "error"
    return str(
        await conn.fetchval(
            "SELECT dialer_dial_failed($1, $2, $3, $4, $5, $6)", call_id, intent, outcome, code, message, now
        )
    )


async def test_requeue_backs_off_doubling_up_to_ten_minutes(conn: asyncpg.Connection) -> None:
    """requeue: back to scheduled (claim and dial stamp cleared) after 5 s, doubling per
    failure, at most 600 s; no attempt is counted."""
    s = await _seed(conn, status="pending", call_sid=None)
    for attempts, delay in ((0, 5), (1, 10), (2, 20), (7, 600), (500, 600)):
        await conn.execute(
            "UPDATE calls SET status = 'pending', dialed_at = $2, carrier_attempts = $3 WHERE id = $1",
            s.call_id,
            DIALED,
            attempts,
        )
        assert await _dial_failed(conn, s.call_id, "requeue", code=None, message="429") == "scheduled"
        call = await _call(conn, s.call_id)
        assert (call["st"], call["carrier_attempts"], call["dialed_at"], call["claimed_by"]) == (
            "scheduled",
            attempts + 1,
            None,
            None,
        )
        assert call["scheduled_at"] == NOW + timedelta(seconds=delay)
        assert call["error_message"] == "429"
    assert await _disposition(conn, s) == ("in_progress", 0)
    await assert_counters_true(conn, s.campaign_id)


async def test_refused_dial_is_one_attempt_ended_by_the_rules(conn: asyncpg.Connection) -> None:
    """fail_permanent: the attempt counts (at dialed_at) and the number is invalid at
    once; fail_retryable: counted, then retried while retries are left, else failed."""
    bad = await _seed(conn, status="pending", call_sid=None)
    assert await _dial_failed(conn, bad.call_id, "fail_permanent", code=21211) == "failed"
    call = await _call(conn, bad.call_id)
    assert (call["st"], call["outcome"], call["error_code"], call["ended_at"]) == ("failed", "error:21211", 21211, NOW)
    assert await _disposition(conn, bad) == ("invalid_number", 1)
    assert await conn.fetchval("SELECT last_call_at FROM campaign_contacts WHERE campaign_id = $1", bad.campaign_id) == DIALED

    retried = await _seed(conn, name="retried", status="pending", call_sid=None)
    assert await _dial_failed(conn, retried.call_id, "fail_retryable", code=None) == "failed"
    assert (await _call(conn, retried.call_id))["outcome"] == "error"
    assert await _disposition(conn, retried) == ("scheduled", 1)
    retry = await conn.fetchrow(
        "SELECT retry_count, scheduled_at FROM calls WHERE campaign_id = $1 AND id <> $2",
        retried.campaign_id,
        retried.call_id,
    )
    assert retry is not None
    assert tuple(retry) == (1, NOW + timedelta(minutes=10))

    last = await _seed(conn, name="last", status="pending", call_sid=None, max_retries=1, retry_count=1)
    assert await _dial_failed(conn, last.call_id, "fail_retryable", code=21210) == "failed"
    assert await _disposition(conn, last) == ("failed", 1)
    for s in (bad, retried, last):
        await assert_counters_true(conn, s.campaign_id)


async def test_dial_failed_leaves_a_call_that_is_no_longer_pending(conn: asyncpg.Connection) -> None:
    """A call a callback adopted meanwhile keeps its status (returned); an unknown id
    answers cancelled; nothing is written."""
    s = await _seed(conn)
    before = await _call(conn, s.call_id)
    assert await _dial_failed(conn, s.call_id, "fail_retryable") == "in_progress"
    assert (await _call(conn, s.call_id))["updated_at"] == before["updated_at"]
    assert await _disposition(conn, s) == ("in_progress", 1)
    assert await _dial_failed(conn, uuid.uuid4(), "requeue") == "cancelled"


async def test_an_unknown_intent_or_ending_is_refused(conn: asyncpg.Connection) -> None:
    """A misspelt intent or ending is an error naming it, not a silent no-op."""
    s = await _seed(conn, status="pending", call_sid=None)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown intent retry"):
        await _dial_failed(conn, s.call_id, "retry")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown ending fax"):
        await conn.execute(
            """
            SELECT dialer_end_attempt(k, c, 'failed', 'fax', 'x', $2, NULL, NULL, NULL, NULL, NULL)
            FROM calls k JOIN campaigns c ON c.id = k.campaign_id WHERE k.id = $1
            """,
            s.call_id,
            NOW,
        )
    assert (await _call(conn, s.call_id))["st"] == "pending"


async def test_adoption_happens_once(conn: asyncpg.Connection) -> None:
    """dialer_adopt_call moves a pending call to in_progress with its sid and counts the
    attempt at dialed_at; a second adoption (any sid) changes nothing."""
    s = await _seed(conn, status="pending", call_sid=None)
    assert await conn.fetchval("SELECT dialer_adopt_call($1, 'CA5', $2)", s.call_id, NOW) is True
    assert await conn.fetchval("SELECT dialer_adopt_call($1, 'CA6', $2)", s.call_id, NOW) is False
    call = await _call(conn, s.call_id)
    assert (call["st"], call["call_sid"], call["last_event_at"]) == ("in_progress", "CA5", NOW)
    assert await _disposition(conn, s) == ("in_progress", 1)
    assert await conn.fetchval("SELECT last_call_at FROM campaign_contacts WHERE campaign_id = $1", s.campaign_id) == DIALED
