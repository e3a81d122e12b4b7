"""New contacts, campaign contacts and calls get time-ordered UUIDs (sql/0013): rows
inserted together sit together in every index keyed by id (docs/benchmarks.md#scale)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.factories import make_campaign


def _millis(u: uuid.UUID) -> int:
    """The Unix milliseconds in a time-ordered id's first 48 bits."""
    return u.int >> 80


def _is_v7_layout(u: uuid.UUID) -> bool:
    return u.version == 7 and u.variant == uuid.RFC_4122


async def test_new_rows_get_unique_time_ordered_ids(conn: asyncpg.Connection) -> None:
    """Every table keyed by id in bulk gets version-7 layout ids: unique, carrying the
    insertion time, and non-decreasing in insertion order within one statement."""
    cid = await make_campaign(conn, status="draft")
    before = datetime.now(UTC) - timedelta(seconds=5)
    rows = await conn.fetch(
        """
        WITH ct AS (
            INSERT INTO contacts (phone_number)
            SELECT '+3491' || lpad(i::text, 7, '0') FROM generate_series(1, 3000) i ORDER BY i
            RETURNING id, phone_number
        ), cc AS (
            INSERT INTO campaign_contacts (campaign_id, contact_id)
            SELECT $1, id FROM ct ORDER BY phone_number
            RETURNING id
        )
        SELECT 'contact' AS kind, id FROM ct UNION ALL SELECT 'campaign_contact', id FROM cc
        """,
        cid,
    )
    contact = await conn.fetchval("SELECT id FROM contacts LIMIT 1")
    call = await conn.fetchval(
        "INSERT INTO calls (campaign_id, contact_id) VALUES ($1, $2) RETURNING id", cid, contact
    )
    after = datetime.now(UTC) + timedelta(seconds=5)
    ids = [r["id"] for r in rows] + [call]
    assert len(set(ids)) == len(ids)
    assert all(_is_v7_layout(u) for u in ids)
    low, high = before.timestamp() * 1000, after.timestamp() * 1000
    assert all(low <= _millis(u) <= high for u in ids)
    contacts = await conn.fetch("SELECT id FROM contacts ORDER BY phone_number")
    stamps = [_millis(r["id"]) for r in contacts]
    assert stamps == sorted(stamps)  # inserted in number order, so ordered by time too
