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
from typing import Any, Final

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
    # The row as the file had it, kept only when rejected rows are written to a file.
    raw: tuple[str, ...] = ()

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

    duplicates: list[tuple[int, int, bool]]  # (line, line of the first occurrence, had no name)
    new: int
    existing: int
    linked: int
    updated: int  # contacts already in the campaign whose fields there changed


# A contact's identity within one phone number (docs/operations.md#contact-import):
# first and last name joined, case folded, spaces collapsed. One expression, used for
# the staged rows and for the contacts they are compared with.
NAME_KEY_SQL: Final = (
    "lower(regexp_replace(btrim(coalesce({first}, '') || ' ' || coalesce({last}, '')), '\\s+', ' ', 'g'))"
)

_STAGED_NAME: Final = NAME_KEY_SQL.format(first="first_name", last="last_name")
_CONTACT_NAME: Final = NAME_KEY_SQL.format(first="c.first_name", last="c.last_name")


class ContactImportStore:
    """The import's staging tables on one connection, inside the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    _BEGIN: Final = f"""
        CREATE TEMPORARY TABLE dialer_import_seen (
            phone_number text NOT NULL,
            name_key text NOT NULL,
            line integer NOT NULL,
            PRIMARY KEY (phone_number, name_key)
        ) ON COMMIT DROP;
        CREATE TEMPORARY TABLE dialer_import_batch (
            line integer NOT NULL,
            phone_number text NOT NULL,
            first_name text,
            last_name text,
            email text,
            timezone text,
            implied_timezone text,
            custom_fields text NOT NULL,
            name_key text GENERATED ALWAYS AS ({_STAGED_NAME}) STORED,
            -- The id a new contact gets, known before the insert, so every staged row
            -- knows its contact (new or existing) for the campaign link.
            new_id uuid NOT NULL DEFAULT gen_random_uuid()
        ) ON COMMIT DROP;
        -- The zones PostgreSQL knows, read once: calling hours are computed in SQL,
        -- so a zone it does not know must not become resolved_timezone (the same
        -- rule as the daemon's own check of a contact).
        CREATE TEMPORARY TABLE dialer_import_zones (name text PRIMARY KEY) ON COMMIT DROP;
        INSERT INTO dialer_import_zones SELECT DISTINCT name FROM pg_timezone_names;
        ANALYZE dialer_import_zones;
    """

    @translate_errors
    async def begin(self) -> None:
        """Take the import lock and create empty staging tables (dropped at commit)."""
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _IMPORT_LOCK_KEY)
        await self._conn.execute(self._BEGIN)

    # A row repeats an earlier one of the file when it has the same number and name,
    # or when it has no name and its number came earlier under any name (nothing
    # tells them apart). Earlier batches (dialer_import_seen) first, then this one.
    _DUPLICATES: Final = """
        WITH ranked AS (
            SELECT line, phone_number, name_key,
                   min(line) OVER (PARTITION BY phone_number, name_key) AS first_same,
                   min(line) OVER (PARTITION BY phone_number) AS first_number
            FROM dialer_import_batch
        ), dup AS (
            SELECT r.line, r.name_key = '' AS unnamed, coalesce(
                (SELECT s.line FROM dialer_import_seen s
                 WHERE s.phone_number = r.phone_number AND s.name_key = r.name_key),
                CASE WHEN r.name_key = '' THEN
                    (SELECT min(s.line) FROM dialer_import_seen s WHERE s.phone_number = r.phone_number) END,
                CASE WHEN r.name_key = '' AND r.first_number < r.line THEN r.first_number END,
                CASE WHEN r.first_same < r.line THEN r.first_same END
            ) AS first_line
            FROM ranked r
        )
        DELETE FROM dialer_import_batch b USING dup
        WHERE b.line = dup.line AND dup.first_line IS NOT NULL
        RETURNING b.line, dup.first_line, dup.unnamed
    """
    _SEEN: Final = (
        "INSERT INTO dialer_import_seen (phone_number, name_key, line) "
        "SELECT phone_number, name_key, line FROM dialer_import_batch"
    )
    # One statement per batch: which existing contact each row is, the new contacts,
    # the campaign links. The contact a row is: the oldest with its number and name, or
    # — a row with no name — the oldest with its number; one index probe per row (a
    # correlated subquery: a join lets the planner, blind to the rows this very import
    # added, as there is no ANALYZE inside a transaction, sort the whole contacts table
    # once per batch). A new contact takes the row's pre-drawn id, so every row knows
    # its contact. The number was parsed and validated on its way in: it is recorded as
    # checked, so the daemon need not parse a million numbers again; own zone first,
    # else the number's, each only if PostgreSQL knows it.
    _FOLD: Final = f"""
        WITH matched AS MATERIALIZED (
            SELECT b.*, (
                SELECT c.id FROM contacts c
                WHERE c.phone_number = b.phone_number
                  AND (b.name_key = '' OR {_CONTACT_NAME} = b.name_key)
                ORDER BY c.created_at, c.id
                LIMIT 1
            ) AS existing_id
            FROM dialer_import_batch b
        ), inserted AS (
            INSERT INTO contacts (id, first_name, last_name, phone_number, email, timezone, custom_fields,
                                  checked_at, number_valid, resolved_timezone)
            SELECT m.new_id, m.first_name, m.last_name, m.phone_number, m.email, m.timezone,
                   m.custom_fields::jsonb, timezone('utc', now()), true, coalesce(own.name, implied.name)
            FROM matched m
            LEFT JOIN dialer_import_zones own ON own.name = m.timezone
            LEFT JOIN dialer_import_zones implied ON implied.name = m.implied_timezone
            WHERE m.existing_id IS NULL
            ORDER BY m.line
            RETURNING id
        ), linked AS (
            -- The row's other columns are the contact's fields in this campaign: set on
            -- the link, replaced when a later file brings other values (next week's
            -- appointment), the contact itself untouched. Two rows of a batch may be
            -- one contact (an unnamed row, then a named one with its number): linked
            -- once, with the later row's fields. A link that already has these fields
            -- is left out before the insert (an index probe; ON CONFLICT would lock
            -- and rewrite its row). xmax = 0: a new link, not an update.
            INSERT INTO campaign_contacts (campaign_id, contact_id, fields)
            SELECT $1::uuid, d.contact_id, d.fields
            FROM (SELECT DISTINCT ON (coalesce(m.existing_id, m.new_id))
                         coalesce(m.existing_id, m.new_id) AS contact_id, m.custom_fields::jsonb AS fields
                  FROM matched m
                  WHERE $1::uuid IS NOT NULL
                  ORDER BY coalesce(m.existing_id, m.new_id), m.line DESC) d
            WHERE NOT EXISTS (SELECT 1 FROM campaign_contacts cc
                              WHERE cc.campaign_id = $1::uuid AND cc.contact_id = d.contact_id
                                AND cc.fields = d.fields)
            ON CONFLICT ON CONSTRAINT campaign_contacts_campaign_contact_key
            DO UPDATE SET fields = EXCLUDED.fields
            WHERE campaign_contacts.fields IS DISTINCT FROM EXCLUDED.fields
            RETURNING xmax = 0 AS added
        )
        SELECT (SELECT count(*) FROM inserted) AS new,
               (SELECT count(*) FROM matched WHERE existing_id IS NOT NULL) AS existing,
               (SELECT count(*) FROM linked WHERE added) AS linked,
               (SELECT count(*) FROM linked WHERE NOT added) AS updated
    """

    @translate_errors
    async def import_batch(self, rows: Sequence[StagedContact], campaign_id: uuid.UUID | None) -> BatchResult:
        """Fold one batch into contacts; link every row's contact to the campaign,
        with the row's other columns as its fields there (replacing older ones).

        A row that repeats an earlier one of the file (same number and name; or no
        name and a number already met) is a duplicate and is left out; a row that is
        an existing contact (docs/operations.md#contact-import) reuses it unchanged.
        """
        await self._conn.execute("TRUNCATE dialer_import_batch")
        await self._conn.copy_records_to_table(
            "dialer_import_batch", records=[r.record() for r in rows], columns=BATCH_COLUMNS
        )
        duplicate_rows = await self._conn.fetch(self._DUPLICATES)
        await self._conn.execute(self._SEEN)
        counts = await self._conn.fetchrow(self._FOLD, campaign_id)
        assert counts is not None
        duplicates = sorted((r["line"], r["first_line"], r["unnamed"]) for r in duplicate_rows)
        return BatchResult(
            duplicates=duplicates,
            new=counts["new"],
            existing=counts["existing"],
            linked=counts["linked"],
            updated=counts["updated"],
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
