"""The engine's store on a real database: activation, claims, the dial gate, carrier
events, retries and dispositions, with an injected clock."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta

import asyncpg
import pytest

from dialer import database
from dialer.config import DatabaseSettings
from dialer.errors import DatabaseUnavailable, TemplateError
from dialer.models import ApplyResult, CallEvent, ClaimedCall, DialIntent
from dialer.store.lifecycle import LifecycleStore
from tests.factories import FakeClock, add_contacts, madrid_number, make_campaign

NOON = datetime(2026, 11, 25, 12, 0)  # a Wednesday, 13:00 in Madrid


def _no_unknown_placeholders(template: str) -> None:
    if "{{bogus}}" in template:
        raise TemplateError("unknown placeholder {{bogus}}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture
async def store(pool: asyncpg.Pool, clock: FakeClock) -> LifecycleStore:
    s = LifecycleStore(
        pool, instance_id=uuid.uuid4(), validate_template=_no_unknown_placeholders, clock=clock
    )
    await s.register_instance(100.0)
    return s


async def _activate(store: LifecycleStore) -> None:
    assert await store.housekeep()


async def _claim_all(store: LifecycleStore, limit: int = 100) -> list[ClaimedCall]:
    out: list[ClaimedCall] = []
    for campaign in await store.dialable_campaigns():
        out += await store.claim(campaign, limit)
    return out


async def test_activation_creates_one_scheduled_call_per_valid_contact(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """Valid contacts get a scheduled call; a bad number becomes invalid_number."""
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, [madrid_number(1), madrid_number(2), "+3412"])
    await _activate(store)
    rows = await conn.fetch("SELECT call_status FROM campaign_contacts ORDER BY call_status")
    assert [r["call_status"] for r in rows] == ["invalid_number", "scheduled", "scheduled"]
    assert await conn.fetchval("SELECT count(*) FROM calls WHERE status = 'scheduled'") == 2
    await _activate(store)  # idempotent
    assert await conn.fetchval("SELECT count(*) FROM calls") == 2


async def test_invalid_campaign_records_last_error_and_is_not_dialed(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """An unknown placeholder keeps the campaign from dialing, with a reason; fixing it clears it."""
    cid = await make_campaign(conn, status="active", script_template="Hi {{bogus}}")
    await add_contacts(conn, cid, [madrid_number(1)])
    await _activate(store)
    assert "bogus" in await conn.fetchval("SELECT last_error FROM campaigns WHERE id = $1", cid)
    assert await store.dialable_campaigns() == []
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts") == "pending"
    await conn.execute("UPDATE campaigns SET script_template = 'Hi' WHERE id = $1", cid)
    await _activate(store)
    assert await conn.fetchval("SELECT last_error FROM campaigns WHERE id = $1", cid) is None
    assert len(await _claim_all(store)) == 1


async def test_claim_respects_calling_hours_in_the_contacts_zone(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """At 12:00 UTC, Madrid (13:00) is inside 09-21 but New York (07:00) is not."""
    cid = await make_campaign(
        conn, status="active", calling_hours_start=time(9), calling_hours_end=time(21)
    )
    await add_contacts(conn, cid, [madrid_number(1), "+12125551234"])
    await _activate(store)
    claimed = await _claim_all(store)
    assert [c.contact.phone_number for c in claimed] == [madrid_number(1)]
    clock.now = NOON + timedelta(hours=2)  # 09:00 in New York
    claimed = await _claim_all(store)
    assert [c.contact.phone_number for c in claimed] == ["+12125551234"]


async def test_calling_days_and_midnight_window(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """A weekday-only campaign dials nothing on Saturday; a 22:00-02:00 window covers 01:00."""
    clock.now = datetime(2026, 11, 28, 12, 0)  # Saturday
    cid = await make_campaign(conn, status="active", calling_days=[1, 2, 3, 4, 5], timezone="UTC")
    await add_contacts(conn, cid, ["+441134960000"])
    await _activate(store)
    assert await _claim_all(store) == []
    await conn.execute(
        "UPDATE campaigns SET calling_days = NULL, calling_hours_start = '22:00', calling_hours_end = '02:00'"
    )
    assert await _claim_all(store) == []  # 12:00 UTC is outside 22-02
    clock.now = datetime(2026, 11, 29, 1, 0)
    assert len(await _claim_all(store)) == 1


async def test_do_not_call_is_checked_at_claim(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """A due call to a DNC number is cancelled and the contact becomes do_not_call."""
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, [madrid_number(1), madrid_number(2)])
    await _activate(store)
    await conn.execute("INSERT INTO do_not_call (phone_number) VALUES ($1)", madrid_number(2))
    claimed = await _claim_all(store)
    assert [c.contact.phone_number for c in claimed] == [madrid_number(1)]
    statuses = await conn.fetch(
        "SELECT ct.phone_number, cc.call_status FROM campaign_contacts cc JOIN contacts ct ON ct.id = cc.contact_id"
    )
    assert {r["phone_number"]: r["call_status"] for r in statuses}[madrid_number(2)] == "do_not_call"


async def test_dial_gate_refuses_after_pause(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """begin_dial fails once the campaign is paused; the claim goes back to scheduled."""
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, [madrid_number(1)])
    await _activate(store)
    (call,) = await _claim_all(store)
    await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", cid)
    assert not await store.begin_dial(call.id)
    await store.release_claim(call.id)
    assert await conn.fetchval("SELECT status::text FROM calls WHERE id = $1", call.id) == "scheduled"


async def test_dial_gate_again_after_a_missed_slot(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """A call that passed the gate but missed its dial slot passes it once more with
    `again` (not without: dialed_at is set), and the second pass still refuses a
    paused campaign."""
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, [madrid_number(1)])
    await _activate(store)
    (call,) = await _claim_all(store)
    assert await store.begin_dial(call.id)
    assert not await store.begin_dial(call.id)
    assert await store.begin_dial(call.id, again=True)
    await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", cid)
    assert not await store.begin_dial(call.id, again=True)


async def test_full_lifecycle_with_retry_then_success(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """busy → retry row after retry_delay; answered → completed; counters and dispositions follow."""
    cid = await make_campaign(conn, status="active", max_retries=2, retry_delay_minutes=10)
    await add_contacts(conn, cid, [madrid_number(1)])
    await _activate(store)
    (call,) = await _claim_all(store)
    assert await store.begin_dial(call.id)
    assert await store.dial_accepted(call.id, "CA1")
    ended = NOON + timedelta(seconds=30)
    event = CallEvent(call_sid="CA1", status="busy", timestamp=ended)
    assert await store.apply_call_event(call.id, event) == ApplyResult.APPLIED
    assert await store.apply_call_event(call.id, event) == ApplyResult.IGNORED
    retry = await conn.fetchrow("SELECT * FROM calls WHERE retry_count = 1")
    assert retry is not None
    assert retry["status"] == "scheduled"
    assert retry["scheduled_at"] == ended + timedelta(minutes=10)
    assert await _claim_all(store) == []  # not due yet
    clock.now = ended + timedelta(minutes=10)
    (second,) = await _claim_all(store)
    assert await store.begin_dial(second.id)
    await store.dial_accepted(second.id, "CA2")
    await store.apply_call_event(None, CallEvent(call_sid="CA2", status="ringing"))
    await store.apply_call_event(None, CallEvent(call_sid="CA2", status="completed", duration=42, timestamp=clock.now))
    assert await store.apply_call_event(None, CallEvent(call_sid="CA2", status="ringing")) == ApplyResult.IGNORED
    cc = await conn.fetchrow("SELECT * FROM campaign_contacts")
    assert cc is not None
    assert (cc["call_status"], cc["call_count"]) == ("completed", 2)
    camp = await conn.fetchrow("SELECT * FROM campaigns")
    assert camp is not None
    assert (camp["total_calls"], camp["pending_calls"], camp["successful_calls"], camp["failed_calls"]) == (2, 0, 1, 1)
    await _activate(store)
    assert await conn.fetchval("SELECT status::text FROM campaigns") == "completed"


async def test_no_retries_left_makes_contact_failed(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """With max_retries = 0 a no-answer is final: contact failed, no new row."""
    cid = await make_campaign(conn, status="active", max_retries=0)
    await add_contacts(conn, cid, [madrid_number(1)])
    await _activate(store)
    (call,) = await _claim_all(store)
    await store.begin_dial(call.id)
    await store.dial_accepted(call.id, "CA1")
    await store.apply_call_event(call.id, CallEvent(call_sid="CA1", status="no-answer"))
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts") == "failed"
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1


async def test_dial_errors_transient_permanent_rejected(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """Transient: back to scheduled, no attempt; permanent: invalid_number at once; rejected: a failed attempt."""
    cid = await make_campaign(conn, status="active", max_retries=3)
    await add_contacts(conn, cid, [madrid_number(1), madrid_number(2), madrid_number(3)])
    await _activate(store)
    a, b, c = await _claim_all(store)
    for call in (a, b, c):
        assert await store.begin_dial(call.id)
    await store.dial_failed(a.id, DialIntent.REQUEUE, status=429, message="429")
    await store.dial_failed(b.id, DialIntent.FAIL_PERMANENT, status=400, code=21211, message="bad number")
    await store.dial_failed(c.id, DialIntent.FAIL_RETRYABLE, status=400, code=21210, message="unverified")
    rows = {r["contact_id"]: r for r in await conn.fetch("SELECT * FROM campaign_contacts")}
    assert (rows[a.contact_id]["call_status"], rows[a.contact_id]["call_count"]) == ("scheduled", 0)
    assert (rows[b.contact_id]["call_status"], rows[b.contact_id]["call_count"]) == ("invalid_number", 1)
    assert (rows[c.contact_id]["call_status"], rows[c.contact_id]["call_count"]) == ("scheduled", 1)
    first = await conn.fetchrow("SELECT status::text, carrier_attempts FROM calls WHERE id = $1", a.id)
    assert first is not None
    assert tuple(first) == ("scheduled", 1)


async def test_callback_before_create_response_adopts_the_call(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """A callback that names our call_id before the sid is stored adopts it; the attempt counts once."""
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, [madrid_number(1)])
    await _activate(store)
    (call,) = await _claim_all(store)
    await store.begin_dial(call.id)
    assert await store.apply_call_event(call.id, CallEvent(call_sid="CA9", status="initiated")) == ApplyResult.APPLIED
    assert not await store.dial_accepted(call.id, "CA9")
    assert await conn.fetchval("SELECT call_count FROM campaign_contacts") == 1
    assert await conn.fetchval("SELECT call_sid FROM calls") == "CA9"


async def test_schedule_end_passing_completes_and_cancels_the_rest(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """A running campaign whose schedule_end passes is completed; unfinished contacts
    and their scheduled calls are cancelled, a live call finishes and is recorded."""
    cid = await make_campaign(
        conn, status="active", schedule_end=NOON + timedelta(hours=1), max_retries=3
    )
    await add_contacts(conn, cid, [madrid_number(1), madrid_number(2)])
    await _activate(store)
    (call,) = await _claim_all(store, limit=1)
    assert await store.begin_dial(call.id)
    await store.dial_accepted(call.id, "CA1")
    clock.now = NOON + timedelta(hours=2)
    await _activate(store)
    assert await conn.fetchval("SELECT status::text FROM campaigns") == "completed"
    rows = {r["contact_id"]: r["call_status"] for r in await conn.fetch("SELECT * FROM campaign_contacts")}
    assert rows[call.contact_id] == "in_progress"
    assert sorted(rows.values()) == ["cancelled", "in_progress"]
    # The live call ends busy with retries left: the campaign is over, so no retry.
    await store.apply_call_event(call.id, CallEvent(call_sid="CA1", status="busy", timestamp=clock.now))
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts WHERE contact_id = $1", call.contact_id) == "cancelled"
    assert await conn.fetchval("SELECT count(*) FROM calls WHERE status = 'scheduled'") == 0


async def test_campaign_started_after_its_end_is_reported_not_emptied(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """schedule_end already past when started: last_error says so, nothing is dialed,
    and every contact stays pending for the operator to fix the date."""
    cid = await make_campaign(
        conn, status="active", schedule_start=NOON - timedelta(days=2), schedule_end=NOON - timedelta(days=1)
    )
    await add_contacts(conn, cid, [madrid_number(1), madrid_number(2)])
    await _activate(store)
    campaign = await conn.fetchrow("SELECT status::text, last_error, total_calls FROM campaigns")
    assert campaign is not None
    assert campaign["status"] == "active"
    assert "is in the past" in campaign["last_error"]
    assert campaign["total_calls"] == 0
    assert [r["call_status"] for r in await conn.fetch("SELECT call_status FROM campaign_contacts")] == ["pending"] * 2
    await conn.execute("UPDATE campaigns SET schedule_end = $2 WHERE id = $1", cid, NOON + timedelta(days=1))
    await _activate(store)
    assert await conn.fetchval("SELECT last_error FROM campaigns") is None
    assert len(await _claim_all(store)) == 2


async def test_contact_reset_to_pending_gets_its_next_attempt_within_retries(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """An operator resetting a finished contact to pending: the next attempt number
    while retries remain; past max_retries it is failed, never dialed again."""
    cid = await make_campaign(conn, status="active", max_retries=1)
    await add_contacts(conn, cid, [madrid_number(1)])
    await _activate(store)
    for attempt, sid in enumerate(["CA1", "CA2"]):
        (call,) = await _claim_all(store)
        assert call.retry_count == attempt
        await store.begin_dial(call.id)
        await store.dial_accepted(call.id, sid)
        await store.apply_call_event(call.id, CallEvent(call_sid=sid, status="no-answer", timestamp=clock.now))
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts") == "failed"
    await conn.execute("UPDATE campaign_contacts SET call_status = 'pending'")
    await _activate(store)
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts") == "failed"
    assert await conn.fetchval("SELECT count(*) FROM calls") == 2
    await conn.execute("UPDATE campaigns SET max_retries = 2")
    await conn.execute("UPDATE campaign_contacts SET call_status = 'pending'")
    await _activate(store)
    assert await conn.fetchval("SELECT call_status FROM campaign_contacts") == "scheduled"
    (call,) = await _claim_all(store)
    assert call.retry_count == 2


async def test_open_zones_answer_matches_the_claim(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """campaign_zones lists the zones of due work; any_zone_open is false exactly
    when the claim finds nothing in hours (Madrid 09-21 at 23:00 UTC, New York open)."""
    cid = await make_campaign(conn, status="active", calling_hours_start=time(9), calling_hours_end=time(21))
    await add_contacts(conn, cid, [madrid_number(1), "+12125551234"])
    await _activate(store)
    (campaign,) = await store.dialable_campaigns()
    zones = await store.campaign_zones(campaign)
    assert sorted(zones) == ["America/New_York", "Europe/Madrid"]
    clock.now = datetime(2026, 11, 25, 23, 0)  # Madrid 00:00 (closed), New York 18:00 (open)
    assert await store.any_zone_open(campaign, zones)
    assert not await store.any_zone_open(campaign, ["Europe/Madrid"])
    clock.now = datetime(2026, 11, 26, 4, 0)  # Madrid 05:00, New York 23:00: both closed
    assert not await store.any_zone_open(campaign, zones)
    assert await _claim_all(store) == []


async def test_a_closed_pool_raises_database_unavailable(db_url: str) -> None:
    """The store's boundary: asyncpg's own error for a closed pool leaves as DatabaseUnavailable."""
    own = await database.create_pool(db_url, DatabaseSettings(pool_min_size=1, pool_max_size=2))
    s = LifecycleStore(own, instance_id=uuid.uuid4(), validate_template=_no_unknown_placeholders)
    await s.ping()
    await own.close()
    with pytest.raises(DatabaseUnavailable):
        await s.ping()
    with pytest.raises(DatabaseUnavailable):
        await s.heartbeat(0.0)
