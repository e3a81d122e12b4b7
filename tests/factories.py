"""Rows for tests, written with plain SQL the way an operator would."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg


class FakeClock:
    """A settable clock returning naive UTC datetimes."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def make_campaign(conn: asyncpg.Connection, **fields: Any) -> uuid.UUID:
    """Insert a campaign; defaults give a dialable campaign with no hour limits."""
    values: dict[str, Any] = {"name": "test campaign", "caller_id": "+34910000000", "retry_delay_minutes": 0}
    values.update(fields)
    cols = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    campaign_id: uuid.UUID = await conn.fetchval(
        f"INSERT INTO campaigns ({cols}) VALUES ({params}) RETURNING id", *values.values()
    )
    return campaign_id


async def add_contacts(
    conn: asyncpg.Connection, campaign_id: uuid.UUID, numbers: list[str], **fields: Any
) -> list[uuid.UUID]:
    """Insert contacts with these numbers and link them to the campaign."""
    ids = []
    for number in numbers:
        cols = ["phone_number", *fields]
        params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        contact_id = await conn.fetchval(
            f"INSERT INTO contacts ({', '.join(cols)}) VALUES ({params}) RETURNING id", number, *fields.values()
        )
        await conn.execute(
            "INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $2)", campaign_id, contact_id
        )
        ids.append(contact_id)
    return ids


def madrid_number(i: int) -> str:
    """A valid Spanish (Madrid, +34 91…) number, distinct per i."""
    return f"+3491{i:07d}"
