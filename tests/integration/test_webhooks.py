"""The webhook listener over real HTTP on loopback in front of the real store on a
real PostgreSQL, with requests signed exactly as Twilio signs them: what each
callback does to the rows, and that a refused request changes none. The app's own
gates and answers, against a fake store, are in tests/unit/test_webhooks_app.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta

import asyncpg
import pytest

from tests.integration.webhook_helpers import (  # noqa: F401 - fixtures are requested by name
    SID,
    at,
    counters,
    insert_live_call,
    real_server,
    snapshot,
)
from tests.webhook_harness import MakeServer, Server, make_server, sign, status_form  # noqa: F401


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
