"""Group commit on a real database: the dial gate, adoptions and carrier events of
several calls made at the same moment go out as one statement each, and every call
ends exactly as it would alone — including a gate that stays shut and a duplicate
event inside one batch."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import asyncpg
import pytest

from dialer.models import ApplyResult, CallEvent
from dialer.store.lifecycle import LifecycleStore
from tests.factories import FakeClock, add_contacts, madrid_number, make_campaign

NOON = datetime(2026, 11, 25, 12, 0)  # a Wednesday, 13:00 in Madrid


@pytest.fixture
async def store(pool: asyncpg.Pool) -> LifecycleStore:
    s = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=lambda _t: None, clock=FakeClock(NOON))
    await s.register_instance()
    return s


async def test_concurrent_lifecycles_share_statements_and_end_alike(
    conn: asyncpg.Connection, store: LifecycleStore
) -> None:
    """Six calls gated, adopted and ended concurrently: one statement per kind, one
    call's gate shut by its paused campaign, retries and dispositions as for one call,
    a duplicated final event in the same batch ignored."""
    running = await make_campaign(conn, status="active", max_retries=1, retry_delay_minutes=10)
    await add_contacts(conn, running, [madrid_number(n) for n in range(1, 6)])
    paused = await make_campaign(conn, status="active", name="paused")
    await add_contacts(conn, paused, [madrid_number(9)])
    assert await store.housekeep()
    calls = []
    for campaign in await store.dialable_campaigns():
        calls += await store.claim(campaign, 10)
    await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", paused)
    shut = next(c for c in calls if c.campaign_id == paused)
    dialed = [c for c in calls if c is not shut]

    gates = await asyncio.gather(*(store.begin_dial(c.id) for c in calls))
    assert dict(zip([c.id for c in calls], gates, strict=True)) == {c.id: c is not shut for c in calls}
    sids = {c.id: f"CA{n}" for n, c in enumerate(dialed)}
    assert all(await asyncio.gather(*(store.dial_accepted(c.id, sids[c.id]) for c in dialed)))
    assert not await store.dial_accepted(dialed[0].id, "CA0")  # adopted already: once only

    ended = NOON + timedelta(seconds=30)
    busy, *answered = dialed
    events = [(busy.id, CallEvent(call_sid=sids[busy.id], status="busy", timestamp=ended))]
    events += [
        (c.id, CallEvent(call_sid=sids[c.id], status="completed", duration=12, timestamp=ended))
        for c in answered
    ]
    events.append(events[-1])  # a duplicated final callback, in the same batch
    results = await asyncio.gather(*(store.apply_call_event(i, e) for i, e in events))
    assert results == [ApplyResult.APPLIED] * len(dialed) + [ApplyResult.IGNORED]

    assert (store._dial_gates.statements, store._adoptions.statements, store._events.statements) == (1, 2, 1)
    dispositions = {
        r["contact_id"]: (r["call_status"], r["call_count"])
        for r in await conn.fetch("SELECT contact_id, call_status, call_count FROM campaign_contacts")
    }
    assert dispositions[busy.contact_id] == ("scheduled", 1)
    assert dispositions[shut.contact_id] == ("scheduled", 0)
    assert all(dispositions[c.contact_id] == ("completed", 1) for c in answered)
    retry = await conn.fetchrow("SELECT status::text, scheduled_at FROM calls WHERE retry_count = 1")
    assert retry is not None and tuple(retry) == ("scheduled", ended + timedelta(minutes=10))
    counters = await conn.fetchrow(
        "SELECT total_calls, pending_calls, successful_calls, failed_calls FROM campaigns WHERE id = $1", running
    )
    assert counters is not None and tuple(counters) == (6, 1, 4, 1)


async def test_a_sid_mismatch_in_a_batch_is_that_event_alone(
    conn: asyncpg.Connection, store: LifecycleStore
) -> None:
    """An event naming another sid than the call holds is ignored; the event beside it
    in the same statement applies."""
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, [madrid_number(1), madrid_number(2)])
    assert await store.housekeep()
    (campaign,) = await store.dialable_campaigns()
    a, b = await store.claim(campaign, 10)
    await asyncio.gather(store.begin_dial(a.id), store.begin_dial(b.id))
    await asyncio.gather(store.dial_accepted(a.id, "CA1"), store.dial_accepted(b.id, "CA2"))
    results = await asyncio.gather(
        store.apply_call_event(a.id, CallEvent(call_sid="CA-other", status="completed")),
        store.apply_call_event(b.id, CallEvent(call_sid="CA2", status="completed")),
    )
    assert list(results) == [ApplyResult.IGNORED, ApplyResult.APPLIED]
    statuses = {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status::text AS status FROM calls")}
    assert (statuses[a.id], statuses[b.id]) == ("in_progress", "completed")
