"""What other roles of the database can do to the dialer's schema (docs/supabase.md):
read from the catalog for every object, so one added later cannot forget the rules
(sql/README.md), and tried as a role with Supabase's default grants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from dialer import database
from dialer.migrate import migrate
from tests.conftest import PgServer
from tests.harness import wait_for

# Functions of the schema that pin no search_path, or that PUBLIC may execute
# (aclexplode of the default ACL when none was ever set: PUBLIC may).
LOOSE_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS function,
       NOT coalesce(EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search_path=%'), false)
           AS unpinned,
       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public_execute
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = current_schema()
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
"""


async def loose_functions(conn: asyncpg.Connection) -> list[str]:
    """Every function of the schema that breaks the rule, with what it lacks."""
    rows = await conn.fetch(LOOSE_FUNCTIONS)
    return [
        f"{r['function']}: " + ", ".join(
            what for what, bad in (("no pinned search_path", r["unpinned"]), ("PUBLIC may execute", r["public_execute"]))
            if bad
        )
        for r in rows
        if r["unpinned"] or r["public_execute"]
    ]


async def test_every_function_pins_its_search_path_and_is_not_public(conn: asyncpg.Connection) -> None:
    """Every function of the schema (from the catalog, not a list) runs with a fixed
    search_path and PUBLIC may not execute it."""
    names = await conn.fetch("SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace")
    assert {"dialer_in_calling_hours", "dialer_apply_call_event", "dialer_calls_counters"} <= {
        r["proname"] for r in names
    }
    assert await loose_functions(conn) == []


async def test_the_function_check_catches_a_function_that_forgets(conn: asyncpg.Connection) -> None:
    """A function created the default way is reported on both counts, and the 0008
    rule fixes it: the catalog check is not vacuous."""
    await conn.execute("CREATE FUNCTION dialer_forgetful() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    assert await loose_functions(conn) == ["dialer_forgetful(): no pinned search_path, PUBLIC may execute"]
    await conn.execute("ALTER FUNCTION dialer_forgetful() SET search_path = public, pg_temp")
    await conn.execute("REVOKE ALL ON FUNCTION dialer_forgetful() FROM PUBLIC")
    assert await loose_functions(conn) == []


async def test_every_view_is_security_invoker(conn: asyncpg.Connection) -> None:
    """A view of the schema runs with its caller's rights (RLS applies through it);
    checked on every view the catalog lists, and on one made here to show the check bites."""
    query = """
        SELECT c.relname FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'v'
          AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)
    """
    assert await conn.fetch(query) == []
    await conn.execute("CREATE VIEW dialer_loose_view AS SELECT id FROM campaigns")
    assert [r["relname"] for r in await conn.fetch(query)] == ["dialer_loose_view"]


async def test_existing_databases_get_rls_on_the_bookkeeping_table(conn: asyncpg.Connection) -> None:
    """A database migrated before the rule (no RLS on dialer_migrations) gets it on
    its next migrate, with nothing else to apply."""
    await conn.execute("ALTER TABLE dialer_migrations DISABLE ROW LEVEL SECURITY")
    assert await migrate(conn) == []
    assert await conn.fetchval("SELECT relrowsecurity FROM pg_class WHERE oid = 'dialer_migrations'::regclass")


# -- a role with Supabase's default grants ----------------------------------------------


@pytest.fixture
async def supabase_like(pg_server: PgServer) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A fresh database set up the way Supabase sets up `public` before the migrations
    run: a role like `anon` gets USAGE on the schema and, through default privileges,
    ALL on every table, sequence and function the migrating role creates. Yields a
    connection (the owner) on the migrated database and the role's name."""
    suffix = uuid.uuid4().hex[:8]
    name, anon = f"dialer_supabase_{suffix}", f"anon_{suffix}"
    await database.recreate_database(pg_server.admin_url, name)
    admin = await asyncpg.connect(pg_server.admin_url)
    await admin.execute(f"CREATE ROLE {anon} NOLOGIN")
    conn = await database.connect(pg_server.url_for(name))
    try:
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {anon}")
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            await conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind} TO {anon}")
        await migrate(conn)
        yield conn, anon
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute(f"DROP OWNED BY {anon}")
        await conn.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {anon}")
        await admin.close()


async def test_anon_can_neither_read_nor_change_the_migrations(
    supabase_like: tuple[asyncpg.Connection, str],
) -> None:
    """With Supabase's default grants, `anon` sees no migration row, deletes none and
    inserts none (before, deleting them made every later migrate fail for good, and
    inserting one silently skipped a migration)."""
    conn, anon = supabase_like
    before = await conn.fetchval("SELECT count(*) FROM dialer_migrations")
    assert before > 0
    await conn.execute(f"SET ROLE {anon}")
    assert await conn.fetchval("SELECT count(*) FROM dialer_migrations") == 0
    assert await conn.execute("DELETE FROM dialer_migrations") == "DELETE 0"
    assert await conn.execute("UPDATE dialer_migrations SET checksum = 'x'") == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("INSERT INTO dialer_migrations (version, name, checksum) VALUES ('9999', 'x', 'x')")
    await conn.execute("RESET ROLE")
    assert await conn.fetchval("SELECT count(*) FROM dialer_migrations") == before


async def test_anon_sees_no_row_of_any_table(supabase_like: tuple[asyncpg.Connection, str]) -> None:
    """Every table of the schema (from the catalog) reads empty to `anon`, though the
    owner's rows are there."""
    conn, anon = supabase_like
    await conn.execute("INSERT INTO campaigns (name) VALUES ('secret campaign')")
    tables = [r["relname"] for r in await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p')"
    )]
    await conn.execute(f"SET ROLE {anon}")
    for table in tables:
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_anon_cannot_call_any_function(supabase_like: tuple[asyncpg.Connection, str]) -> None:
    """Supabase's default privileges grant EXECUTE to `anon` explicitly, not only to
    PUBLIC: it holds EXECUTE on no function of the schema, and calling one fails."""
    conn, anon = supabase_like
    callable_by_anon = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS f FROM pg_proc p "
        "WHERE p.pronamespace = current_schema()::regnamespace AND has_function_privilege($1, p.oid, 'EXECUTE')",
        anon,
    )
    assert [r["f"] for r in callable_by_anon] == []
    await conn.execute(f"SET ROLE {anon}")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetchval("SELECT dialer_in_calling_hours(now()::timestamp, 'UTC', NULL, NULL, NULL)")


# -- triggers still run for every writer ----------------------------------------------


@pytest.fixture
async def writer(conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A role that is not the owner, may write every table (and bypasses RLS, as a
    daemon role other than the owner must) but holds EXECUTE on no function."""
    role = f"writer_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE ROLE {role} NOLOGIN BYPASSRLS")
    await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
    yield role
    await conn.execute("RESET ROLE")
    await conn.execute(f"DROP OWNED BY {role}")
    await conn.execute(f"DROP ROLE {role}")


async def test_triggers_run_for_a_writer_without_execute(
    db_url: str, conn: asyncpg.Connection, writer: str
) -> None:
    """EXECUTE is checked when a trigger is created, not when it fires: a writer with
    no EXECUTE on any function still gets every trigger (counters, updated_at, the
    final-status guard, the contact re-check, NOTIFY), while calling a function
    directly is refused."""
    listener = await database.connect(db_url)
    heard: list[str] = []
    await listener.add_listener("dialer_campaign", lambda *args: heard.append(args[3]))
    try:
        await conn.execute(f"SET ROLE {writer}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT dialer_in_calling_hours(now()::timestamp, 'UTC', NULL, NULL, NULL)")
        cid = await conn.fetchval("INSERT INTO campaigns (name, status) VALUES ('w', 'active') RETURNING id")
        contact = await conn.fetchval(
            "INSERT INTO contacts (phone_number, checked_at) VALUES ('+34910000001', now()) RETURNING id"
        )
        await conn.execute("INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $2)", cid, contact)
        call = await conn.fetchval(
            "INSERT INTO calls (campaign_id, contact_id) VALUES ($1, $2) RETURNING id", cid, contact
        )
        await conn.execute("UPDATE calls SET status = 'failed' WHERE id = $1", call)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE calls SET status = 'completed' WHERE id = $1", call)
        await conn.execute("UPDATE contacts SET phone_number = '+34910000002' WHERE id = $1", contact)
        counters = await conn.fetchrow("SELECT total_calls, failed_calls, pending_calls FROM campaigns WHERE id = $1", cid)
        assert counters is not None
        assert dict(counters) == {"total_calls": 1, "failed_calls": 1, "pending_calls": 0}
        assert await conn.fetchval("SELECT checked_at IS NULL AND updated_at > created_at FROM contacts WHERE id = $1", contact)
        await conn.execute("RESET ROLE")

        async def notified() -> bool:
            return any(p.startswith(str(cid)) for p in heard)

        await wait_for(notified, 5, "the campaign NOTIFY from the writer's insert")
    finally:
        await listener.close()

