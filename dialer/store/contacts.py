"""SQL for contacts, their CSV import, and the do-not-call list.

The import stages each batch with COPY into session-local temporary tables and folds
it into `contacts` with one INSERT … SELECT, so a million-row file costs a few hundred
statements, not a million. The caller runs the whole import in one transaction:
an interrupted import leaves nothing behind, and running it again is always safe.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from dialer.database import translate_errors

# Held for the import's transaction so two concurrent imports cannot both decide a
# number is new and create it twice (contacts.phone_number is indexed, not unique).
_IMPORT_LOCK_KEY = 0x6469616C_01  # "dial" + 1

BATCH_COLUMNS = (
    "line",
    "phone_number",
    "first_name",
    "last_name",
    "email",
    "timezone",
    "implied_timezone",
    "custom_fields",
)


@dataclass(frozen=True)
class StagedContact:
    """One validated CSV row, ready for COPY."""

    line: int
    phone_number: str
    first_name: str | None
    last_name: str | None
    email: str | None
    timezone: str | None
    custom_fields: dict[str, str]
    # The one zone the number implies (dialer.numbers), already known from parsing.
    implied_timezone: str | None = None

    def record(self) -> tuple[Any, ...]:
        """The row in BATCH_COLUMNS order."""
        return (
            self.line,
            self.phone_number,
            self.first_name,
            self.last_name,
            self.email,
            self.timezone,
            self.implied_timezone,
            # Staged as JSON text: COPY's binary protocol has no jsonb encoder, and
            # text keeps the import independent of the connection's type codecs.
            json.dumps(self.custom_fields, ensure_ascii=False),
        )


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: duplicates of earlier batches, and the contact counts."""

    duplicates: list[tuple[int, int]]  # (line, line of the first occurrence)
    new: int
    existing: int
    linked: int


class ContactImportStore:
    """The import's staging tables on one connection, inside the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @translate_errors
    async def begin(self) -> None:
        """Take the import lock and create empty staging tables (dropped at commit)."""
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _IMPORT_LOCK_KEY)
        await self._conn.execute(
            """
            CREATE TEMPORARY TABLE dialer_import_seen (
                phone_number text PRIMARY KEY,
                line integer NOT NULL
            ) ON COMMIT DROP;
            CREATE TEMPORARY TABLE dialer_import_batch (
                line integer NOT NULL,
                phone_number text NOT NULL,
                first_name text,
                last_name text,
                email text,
                timezone text,
                implied_timezone text,
                custom_fields text NOT NULL
            ) ON COMMIT DROP;
            -- The zones PostgreSQL knows, read once: calling hours are computed in SQL,
            -- so a zone it does not know must not become resolved_timezone (the same
            -- rule as the daemon's own check of a contact).
            CREATE TEMPORARY TABLE dialer_import_zones (name text PRIMARY KEY) ON COMMIT DROP;
            INSERT INTO dialer_import_zones SELECT DISTINCT name FROM pg_timezone_names;
            ANALYZE dialer_import_zones;
            """
        )

    @translate_errors
    async def import_batch(self, rows: Sequence[StagedContact], campaign_id: uuid.UUID | None) -> BatchResult:
        """Fold one batch (numbers unique within it) into contacts; link to the campaign.

        A number already met in an earlier batch of the same file is a duplicate and is
        left out; a number already in `contacts` reuses that contact unchanged.
        """
        await self._conn.execute("TRUNCATE dialer_import_batch")
        await self._conn.copy_records_to_table(
            "dialer_import_batch", records=[r.record() for r in rows], columns=BATCH_COLUMNS
        )
        duplicate_rows = await self._conn.fetch(
            """
            DELETE FROM dialer_import_batch b
            USING dialer_import_seen s
            WHERE s.phone_number = b.phone_number
            RETURNING b.line, s.line AS first_line
            """
        )
        await self._conn.execute(
            "INSERT INTO dialer_import_seen (phone_number, line) "
            "SELECT phone_number, line FROM dialer_import_batch"
        )
        counts = await self._conn.fetchrow(
            """
            WITH existing AS (
                -- Several contacts may already share a number (rows written by hand):
                -- reuse the oldest, deterministically. One index probe per staged row
                -- (LATERAL … LIMIT 1): a join lets the planner, blind to the rows this
                -- very import added (no ANALYZE inside a transaction), sort the whole
                -- contacts table once per batch, which made a big import quadratic.
                SELECT b.phone_number, e.id
                FROM dialer_import_batch b
                CROSS JOIN LATERAL (
                    SELECT c.id FROM contacts c
                    WHERE c.phone_number = b.phone_number
                    ORDER BY c.created_at, c.id
                    LIMIT 1
                ) e
            ), inserted AS (
                -- The number was parsed and validated on its way in: record it as
                -- checked, so the daemon need not parse a million numbers again.
                -- Own zone first, else the number's, each only if PostgreSQL knows it.
                INSERT INTO contacts (first_name, last_name, phone_number, email, timezone, custom_fields,
                                      checked_at, number_valid, resolved_timezone)
                SELECT b.first_name, b.last_name, b.phone_number, b.email, b.timezone, b.custom_fields::jsonb,
                       timezone('utc', now()), true, coalesce(own.name, implied.name)
                FROM dialer_import_batch b
                LEFT JOIN dialer_import_zones own ON own.name = b.timezone
                LEFT JOIN dialer_import_zones implied ON implied.name = b.implied_timezone
                WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.phone_number = b.phone_number)
                ORDER BY b.line
                RETURNING id
            ), linked AS (
                INSERT INTO campaign_contacts (campaign_id, contact_id)
                SELECT $1::uuid, x.id
                FROM (SELECT id FROM inserted UNION ALL SELECT id FROM existing) x
                WHERE $1::uuid IS NOT NULL
                ON CONFLICT ON CONSTRAINT campaign_contacts_campaign_contact_key DO NOTHING
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM inserted) AS new,
                   (SELECT count(*) FROM existing) AS existing,
                   (SELECT count(*) FROM linked) AS linked
            """,
            campaign_id,
        )
        assert counts is not None
        duplicates = sorted((int(r["line"]), int(r["first_line"])) for r in duplicate_rows)
        return BatchResult(
            duplicates=duplicates, new=counts["new"], existing=counts["existing"], linked=counts["linked"]
        )


@dataclass(frozen=True)
class DncChange:
    """The outcome of adding one number to the do-not-call list."""

    phone_number: str
    added: bool  # False: it was already listed (its reason may have been updated)


class DoNotCallStore:
    """The do_not_call table."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @translate_errors
    async def add(self, phone_number: str, reason: str | None) -> DncChange:
        """List a number; an already listed number keeps its entry, with a new reason if given."""
        inserted = await self._conn.fetchval(
            """
            INSERT INTO do_not_call (phone_number, reason) VALUES ($1, $2)
            ON CONFLICT (phone_number) DO UPDATE
                SET reason = coalesce(EXCLUDED.reason, do_not_call.reason)
            RETURNING (xmax = 0)
            """,
            phone_number,
            reason,
        )
        return DncChange(phone_number=phone_number, added=bool(inserted))

    @translate_errors
    async def add_many(self, entries: Sequence[tuple[str, str | None]]) -> int:
        """List many (number, reason) pairs at once; returns how many were new."""
        added = await self._conn.fetchval(
            """
            WITH input AS (
                SELECT DISTINCT ON (n) n, r FROM unnest($1::text[], $2::text[]) AS t(n, r)
            ), ins AS (
                INSERT INTO do_not_call (phone_number, reason)
                SELECT n, r FROM input
                ON CONFLICT (phone_number) DO NOTHING
                RETURNING 1
            )
            SELECT count(*) FROM ins
            """,
            [n for n, _ in entries],
            [r for _, r in entries],
        )
        return int(added)

    @translate_errors
    async def remove(self, phone_number: str) -> bool:
        """Unlist a number; False when it was not listed."""
        removed = await self._conn.fetchval(
            "DELETE FROM do_not_call WHERE phone_number = $1 RETURNING true", phone_number
        )
        return bool(removed)
