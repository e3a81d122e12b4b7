"""Calls and tables for webhook tests against the real store on the test's own
database: a live call inserted as the engine leaves it, snapshots of every table,
and the webhook app in front of the real LifecycleStore."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from dialer.store.lifecycle import LifecycleStore
from tests.webhook_harness import MakeServer, Server

SID = "CA" + "a" * 32


@dataclass
class LiveCall:
    """One in-progress call inserted with plain SQL, as the engine would have left it."""

    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    call_id: uuid.UUID

    @property
    def status_path(self) -> str:
        """The status callback path the engine gives the carrier for this call."""
        return f"/twilio/status?call_id={self.call_id}"


async def insert_live_call(
    conn: asyncpg.Connection, *, max_retries: int = 2, retry_delay_minutes: int = 30, sid: str = SID
) -> LiveCall:
    """An active campaign with one contact whose first attempt is in progress at the carrier."""
    campaign_id = await conn.fetchval(
        "INSERT INTO campaigns (name, status, caller_id, max_retries, retry_delay_minutes) "
        "VALUES ('webhooks', 'active', '+34910000000', $1, $2) RETURNING id",
        max_retries,
        retry_delay_minutes,
    )
    contact_id = await conn.fetchval("INSERT INTO contacts (phone_number) VALUES ('+34911234567') RETURNING id")
    await conn.execute(
        "INSERT INTO campaign_contacts (campaign_id, contact_id, call_status, call_count, last_call_at) "
        "VALUES ($1, $2, 'in_progress', 1, timezone('utc', now()))",
        campaign_id,
        contact_id,
    )
    call_id = await conn.fetchval(
        "INSERT INTO calls (campaign_id, contact_id, status, call_sid, dialed_at) "
        "VALUES ($1, $2, 'in_progress', $3, timezone('utc', now())) RETURNING id",
        campaign_id,
        contact_id,
        sid,
    )
    return LiveCall(campaign_id, contact_id, call_id)


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table in the public schema, in key order."""
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    return {
        t["tablename"]: [dict(r) for r in await conn.fetch(f'SELECT * FROM "{t["tablename"]}" ORDER BY 1')]
        for t in tables
    }


async def counters(conn: asyncpg.Connection, campaign_id: uuid.UUID) -> dict[str, int]:
    """The campaign's four counters."""
    row = await conn.fetchrow(
        "SELECT total_calls, pending_calls, successful_calls, failed_calls FROM campaigns WHERE id = $1",
        campaign_id,
    )
    assert row is not None
    return dict(row)


def _no_template_check(template: str) -> None:
    """Templates play no part in callbacks."""


@pytest.fixture
async def real_server(make_server: MakeServer, pool: asyncpg.Pool) -> Server:
    """The webhook app in front of the real LifecycleStore on the test's own database."""
    store = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=_no_template_check)
    return await make_server(store)


def at(hh_mm_ss: str) -> str:
    """An RFC 2822 Timestamp on 25 Nov 2026 at this UTC time."""
    return f"Wed, 25 Nov 2026 {hh_mm_ss} +0000"
