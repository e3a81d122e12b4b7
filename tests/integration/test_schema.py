"""The schema against the data model and its additions (docs/schema.md), read back from the
catalog of a real PostgreSQL."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from tests.invariants import assert_counters_true

# Every column of the original model with the PostgreSQL type its original type becomes.
MODEL_COLUMNS: dict[str, dict[str, str]] = {
    "campaigns": {
        "id": "uuid",
        "name": "character varying(255)",
        "description": "text",
        "status": "campaign_status",
        "schedule_start": "timestamp without time zone",
        "schedule_end": "timestamp without time zone",
        "script_template": "text",
        "max_retries": "integer",
        "retry_delay_minutes": "integer",
        "calling_hours_start": "time without time zone",
        "calling_hours_end": "time without time zone",
        "pending_calls": "integer",
        "total_calls": "integer",
        "successful_calls": "integer",
        "failed_calls": "integer",
        "created_at": "timestamp without time zone",
        "updated_at": "timestamp without time zone",
    },
    "calls": {
        "id": "uuid",
        "campaign_id": "uuid",
        "contact_id": "uuid",
        "status": "call_status",
        "call_sid": "character varying(255)",
        "duration": "integer",
        "recording_url": "character varying(255)",
        "retry_count": "integer",
        "scheduled_at": "timestamp without time zone",
        "started_at": "timestamp without time zone",
        "ended_at": "timestamp without time zone",
        "created_at": "timestamp without time zone",
        "updated_at": "timestamp without time zone",
    },
    "contacts": {
        "id": "uuid",
        "first_name": "character varying(100)",
        "last_name": "character varying(100)",
        "phone_number": "character varying(20)",
        "email": "character varying(255)",
        "custom_fields": "jsonb",
        "created_at": "timestamp without time zone",
        "updated_at": "timestamp without time zone",
    },
    "campaign_contacts": {
        "id": "uuid",
        "campaign_id": "uuid",
        "contact_id": "uuid",
        "call_status": "character varying(50)",
        "call_count": "integer",
        "last_call_at": "timestamp without time zone",
        "created_at": "timestamp without time zone",
        "updated_at": "timestamp without time zone",
    },
}

ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "campaigns": {
        "caller_id": "text",
        "timezone": "text",
        "max_concurrent_calls": "integer",
        "calling_days": "smallint[]",
        "last_error": "text",
        "calls_per_second": "numeric",
    },
    "contacts": {"timezone": "text"},
    "calls": {
        "outcome": "text",
        "error_code": "integer",
        "error_message": "text",
        "answered_by": "text",
    },
    "do_not_call": {
        "phone_number": "character varying(20)",
        "reason": "text",
        "created_at": "timestamp without time zone",
    },
}

MODEL_ENUMS = {
    "campaign_status": ["draft", "active", "paused", "completed", "cancelled"],
    "call_status": ["scheduled", "in_progress", "completed", "failed", "cancelled", "pending"],
}

MODEL_INDEXES = {
    "campaigns_name_idx": ("campaigns", "name"),
    "calls_campaign_id_idx": ("calls", "campaign_id"),
    "calls_contact_id_idx": ("calls", "contact_id"),
    "contacts_phone_number_idx": ("contacts", "phone_number"),
    "campaign_contacts_campaign_id_idx": ("campaign_contacts", "campaign_id"),
    "campaign_contacts_contact_id_idx": ("campaign_contacts", "contact_id"),
}

MODEL_FOREIGN_KEYS = {
    "calls_campaign_id_fk": ("calls", "campaign_id", "campaigns"),
    "calls_contact_id_fk": ("calls", "contact_id", "contacts"),
    "campaign_contacts_campaign_id_fk": ("campaign_contacts", "campaign_id", "campaigns"),
    "campaign_contacts_contact_id_fk": ("campaign_contacts", "contact_id", "contacts"),
}


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_attribute a
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
        """,
        table,
    )
    return {r["attname"]: r["type"] for r in rows}


@pytest.mark.parametrize("table", sorted(MODEL_COLUMNS))
async def test_model_columns_exist_with_their_types(conn: asyncpg.Connection, table: str) -> None:
    """Every column of the original model (docs/schema.md) exists with its type."""
    actual = await _columns(conn, table)
    expected = MODEL_COLUMNS[table]
    assert {k: actual.get(k) for k in expected} == expected


@pytest.mark.parametrize("table", sorted(ADDED_COLUMNS))
async def test_added_columns_exist(conn: asyncpg.Connection, table: str) -> None:
    """The columns docs/schema.md adds exist with their types."""
    actual = await _columns(conn, table)
    expected = ADDED_COLUMNS[table]
    assert {k: actual.get(k) for k in expected} == expected


async def test_model_enums_have_their_values_in_order(conn: asyncpg.Connection) -> None:
    """Both enums carry exactly the original model's values."""
    for name, values in MODEL_ENUMS.items():
        rows = await conn.fetch(
            "SELECT enumlabel FROM pg_enum WHERE enumtypid = $1::regtype ORDER BY enumsortorder", name
        )
        assert [r["enumlabel"] for r in rows] == values


async def test_model_indexes_exist_on_their_columns(conn: asyncpg.Connection) -> None:
    """Every index of the original model exists by name on its table and column."""
    for index, (table, column) in MODEL_INDEXES.items():
        row = await conn.fetchrow(
            """
            SELECT t.relname AS table, a.attname AS column
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
            WHERE i.relname = $1
            """,
            index,
        )
        assert row is not None, f"index {index} is missing"
        assert (row["table"], row["column"]) == (table, column)


async def test_model_constraints_exist(conn: asyncpg.Connection) -> None:
    """campaigns_dates_check and every foreign key of the original model exist by name, pointing right."""
    check = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'campaigns_dates_check'"
    )
    assert check is not None and "schedule_end >= schedule_start" in check
    for name, (table, column, target) in MODEL_FOREIGN_KEYS.items():
        row = await conn.fetchrow(
            """
            SELECT c.conrelid::regclass::text AS table, c.confrelid::regclass::text AS target,
                   a.attname AS column
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.conname = $1 AND c.contype = 'f'
            """,
            name,
        )
        assert row is not None, f"foreign key {name} is missing"
        assert (row["table"], row["column"], row["target"]) == (table, column, target)


async def test_row_level_security_is_on_for_every_table(conn: asyncpg.Connection) -> None:
    """Supabase's anon/authenticated roles see nothing: RLS on, no policies, for every
    table of the schema read from the catalog (the migrations' bookkeeping included),
    so a table added later cannot forget it."""
    rows = await conn.fetch(
        """
        SELECT c.relname, c.relrowsecurity,
               (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
        """
    )
    assert {r["relname"] for r in rows} >= {
        "campaigns",
        "contacts",
        "campaign_contacts",
        "calls",
        "do_not_call",
        "dialer_instances",
        "dialer_migrations",
        "dialer_pacing",
        "dialer_campaign_pacing",
    }
    assert all(r["relrowsecurity"] and r["policies"] == 0 for r in rows), rows


async def test_operator_can_insert_naming_only_what_matters(conn: asyncpg.Connection) -> None:
    """Defaults fill everything else: ids, statuses, counters, retries, timestamps."""
    campaign = await conn.fetchrow("INSERT INTO campaigns (name) VALUES ('c') RETURNING *")
    contact = await conn.fetchrow("INSERT INTO contacts (phone_number) VALUES ('+34911234567') RETURNING *")
    assert campaign is not None and contact is not None
    link = await conn.fetchrow(
        "INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $2) RETURNING *",
        campaign["id"],
        contact["id"],
    )
    assert link is not None
    call = await conn.fetchrow(
        "INSERT INTO calls (campaign_id, contact_id) VALUES ($1, $2) RETURNING *",
        campaign["id"],
        contact["id"],
    )
    assert call is not None
    assert campaign["status"] == "draft"
    assert (campaign["max_retries"], campaign["retry_delay_minutes"]) == (2, 60)
    assert contact["custom_fields"] == {}
    assert (link["call_status"], link["call_count"]) == ("pending", 0)
    assert (call["status"], call["retry_count"]) == ("scheduled", 0)
    assert call["scheduled_at"] is not None and call["created_at"] is not None


async def test_dates_check_rejects_end_before_start(conn: asyncpg.Connection) -> None:
    """campaigns_dates_check: schedule_end must not precede schedule_start."""
    with pytest.raises(asyncpg.CheckViolationError, match="campaigns_dates_check"):
        await conn.execute(
            "INSERT INTO campaigns (name, schedule_start, schedule_end) "
            "VALUES ('x', '2026-01-02', '2026-01-01')"
        )
    await conn.execute(
        "INSERT INTO campaigns (name, schedule_start, schedule_end) VALUES ('x', '2026-01-01', '2026-01-01')"
    )


async def test_foreign_keys_reject_orphans(conn: asyncpg.Connection) -> None:
    """A call or campaign contact must point at an existing campaign and contact."""
    ghost = "00000000-0000-0000-0000-000000000001"
    for sql, name in [
        ("INSERT INTO calls (campaign_id, contact_id) VALUES ($1, $1)", "calls_campaign_id_fk"),
        (
            "INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $1)",
            "campaign_contacts_campaign_id_fk",
        ),
    ]:
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=name):
            await conn.execute(sql, ghost)
    campaign = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('c') RETURNING id")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="calls_contact_id_fk"):
        await conn.execute("INSERT INTO calls (campaign_id, contact_id) VALUES ($1, $2)", campaign, ghost)


async def test_a_contact_is_in_a_campaign_once(conn: asyncpg.Connection) -> None:
    """Unique (campaign_id, contact_id) on campaign_contacts."""
    campaign = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('c') RETURNING id")
    contact = await conn.fetchval("INSERT INTO contacts (phone_number) VALUES ('+1') RETURNING id")
    sql = "INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $2)"
    await conn.execute(sql, campaign, contact)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(sql, campaign, contact)


async def test_updated_at_moves_on_update(conn: asyncpg.Connection) -> None:
    """The trigger keeps updated_at current on every table that has it."""
    campaign = await conn.fetchrow("INSERT INTO campaigns (name) VALUES ('c') RETURNING *")
    assert campaign is not None
    await asyncio.sleep(0.01)
    after = await conn.fetchrow("UPDATE campaigns SET name = 'd' WHERE id = $1 RETURNING *", campaign["id"])
    assert after is not None
    assert after["updated_at"] > campaign["updated_at"]
    assert after["created_at"] == campaign["created_at"]


async def test_final_call_status_never_changes(conn: asyncpg.Connection) -> None:
    """A completed/failed/cancelled call cannot be moved to another status."""
    campaign = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('c') RETURNING id")
    contact = await conn.fetchval("INSERT INTO contacts (phone_number) VALUES ('+1') RETURNING id")
    call = await conn.fetchval(
        "INSERT INTO calls (campaign_id, contact_id, status) VALUES ($1, $2, 'cancelled') RETURNING id",
        campaign,
        contact,
    )
    with pytest.raises(asyncpg.CheckViolationError, match="is final"):
        await conn.execute("UPDATE calls SET status = 'scheduled' WHERE id = $1", call)


async def test_one_open_attempt_and_one_live_call_per_contact(conn: asyncpg.Connection) -> None:
    """Invariant 1 at the schema level: the partial unique indexes refuse a second
    open attempt in a campaign and a second live call across campaigns."""
    c1 = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('a') RETURNING id")
    c2 = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('b') RETURNING id")
    contact = await conn.fetchval("INSERT INTO contacts (phone_number) VALUES ('+1') RETURNING id")
    await conn.execute("INSERT INTO calls (campaign_id, contact_id) VALUES ($1, $2)", c1, contact)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO calls (campaign_id, contact_id, retry_count) VALUES ($1, $2, 1)", c1, contact
        )
    await conn.execute(
        "INSERT INTO calls (campaign_id, contact_id, status) VALUES ($1, $2, 'pending')", c2, contact
    )
    with pytest.raises(asyncpg.UniqueViolationError, match="calls_one_live_call_idx"):
        await conn.execute("UPDATE calls SET status = 'pending' WHERE campaign_id = $1", c1)


async def test_counters_equal_aggregates_under_concurrent_writers(
    conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Invariant 5: inserts, status moves and deletes from eight connections at once
    leave every campaign's counters equal to the aggregates of its calls."""
    campaigns = [
        await conn.fetchval("INSERT INTO campaigns (name) VALUES ($1) RETURNING id", f"c{i}")
        for i in range(3)
    ]
    contacts = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO contacts (phone_number) SELECT '+1' || g FROM generate_series(1, 400) g RETURNING id"
        )
    ]

    async def writer(seed: int) -> None:
        rnd = random.Random(seed)
        mine = contacts[seed * 50 : (seed + 1) * 50]
        for contact in mine:
            campaign = rnd.choice(campaigns)
            async with pool.acquire() as c, c.transaction():
                call = await c.fetchval(
                    "INSERT INTO calls (campaign_id, contact_id) VALUES ($1, $2) RETURNING id",
                    campaign,
                    contact,
                )
                await c.execute("UPDATE calls SET status = 'pending' WHERE id = $1", call)
            final = rnd.choice(["completed", "failed", "cancelled", None])
            if final == "cancelled":
                await pool.execute("UPDATE calls SET status = 'cancelled' WHERE id = $1", call)
            elif final:
                await pool.execute(
                    "UPDATE calls SET status = 'in_progress', call_sid = $2 WHERE id = $1",
                    call,
                    f"CA{call.hex}",
                )
                await pool.execute("UPDATE calls SET status = $2 WHERE id = $1", call, final)
            if rnd.random() < 0.1:
                await pool.execute("DELETE FROM calls WHERE id = $1", call)
        # One bulk statement touching every campaign at once.
        await pool.execute(
            "UPDATE calls SET status = 'scheduled' WHERE status = 'pending' AND contact_id = ANY($1::uuid[])",
            mine,
        )

    await asyncio.gather(*(writer(i) for i in range(8)))
    totals = await conn.fetchval("SELECT sum(total_calls) FROM campaigns")
    assert totals > 300
    await assert_counters_true(conn)
