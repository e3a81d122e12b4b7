"""Several contacts may share one phone number (a clinic's patients of one family),
each called about their own appointment; the number is never rung twice at once,
across all campaigns (docs/invariants.md#1)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import pytest

from dialer.models import CallEvent, ClaimedCall
from dialer.store.lifecycle import LifecycleStore
from dialer.twiml import validate_template
from tests.factories import FakeClock, add_contacts, madrid_number, make_campaign

NOON = datetime(2026, 11, 25, 12, 0)
FAMILY = madrid_number(7)


@pytest.fixture
async def store(pool: asyncpg.Pool) -> LifecycleStore:
    s = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=validate_template, clock=FakeClock(NOON))
    await s.register_instance()
    return s


async def _claim_all(store: LifecycleStore) -> list[ClaimedCall]:
    claimed: list[ClaimedCall] = []
    for campaign in await store.dialable_campaigns():
        claimed += await store.claim(campaign, 50)
    return claimed


async def test_one_live_call_per_number_across_contacts_and_campaigns(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """Three contacts on one number in two campaigns (and one with a number of its own):
    each pass rings the shared number once; when that call ends the next contact on it
    is rung, until every one of them had their own call."""
    first = await make_campaign(conn, status="active")
    second = await make_campaign(conn, status="active")
    mother, son = await add_contacts(conn, first, [FAMILY, FAMILY])
    [alone] = await add_contacts(conn, first, [madrid_number(8)])
    [daughter] = await add_contacts(conn, second, [FAMILY])
    assert await store.housekeep()
    rung: list[uuid.UUID] = []
    for n in range(3):
        claimed = await _claim_all(store)
        on_family = [c for c in claimed if c.contact.phone_number == FAMILY]
        assert len(on_family) == 1, n
        assert [c.contact_id for c in claimed if c.contact_id == alone] == ([alone] if n == 0 else [])
        assert await _claim_all(store) == []  # still live: nobody else on that number
        call = on_family[0]
        assert await conn.fetchval("SELECT dialed_number FROM calls WHERE id = $1", call.id) == FAMILY
        rung.append(call.contact_id)
        assert await store.begin_dial(call.id)
        sid = f"CA{n}"
        assert await store.dial_accepted(call.id, sid)
        await store.apply_call_event(call.id, CallEvent(call_sid=sid, status="completed", duration=5))
    assert sorted(rung) == sorted([mother, son, daughter])
    assert await _claim_all(store) == []


async def test_the_schema_refuses_a_second_live_call_to_a_number(conn: asyncpg.Connection) -> None:
    """The backstop: two live calls with the same dialed_number cannot both exist,
    whichever contacts and campaigns they belong to."""
    cid = await make_campaign(conn, status="active")
    a, b = await add_contacts(conn, cid, [FAMILY, FAMILY])
    insert = (
        "INSERT INTO calls (campaign_id, contact_id, status, dialed_number) "
        "VALUES ($1, $2, 'pending', $3)"
    )
    await conn.execute(insert, cid, a, FAMILY)
    with pytest.raises(asyncpg.UniqueViolationError, match="calls_one_live_call_per_number_idx"):
        await conn.execute(insert, cid, b, FAMILY)
    await conn.execute("UPDATE calls SET status = 'cancelled' WHERE contact_id = $1", a)
    await conn.execute(insert, cid, b, FAMILY)
