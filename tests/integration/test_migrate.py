"""`dialer migrate`: ordered, transactional, locked, recorded, idempotent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from dialer import database
from dialer.errors import MigrationError
from dialer.migrate import discover, migrate, pending
from tests.conftest import PgServer


@pytest.fixture
async def empty_db(pg_server: PgServer) -> str:
    """A brand-new database with no schema at all."""
    name = "dialer_empty_" + str(abs(hash(asyncio.current_task())))[:10]
    admin = await asyncpg.connect(pg_server.admin_url)
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    return pg_server.url_for(name)


async def test_second_run_applies_nothing(empty_db: str) -> None:
    """The first run applies every file in order; the second is a no-op."""
    conn = await database.connect(empty_db)
    try:
        first = await migrate(conn)
        assert [m.path.name for m in first] == [m.path.name for m in discover()]
        assert await migrate(conn) == []
        assert await pending(conn) == []
        rows = await conn.fetch("SELECT version FROM dialer_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in discover()]
    finally:
        await conn.close()


async def test_two_concurrent_migrations_are_safe(empty_db: str) -> None:
    """Two processes migrating at once: the advisory lock serialises them, and the
    schema is applied exactly once."""
    a = await database.connect(empty_db)
    b = await database.connect(empty_db)
    try:
        ra, rb = await asyncio.gather(migrate(a), migrate(b))
        assert sorted([len(ra), len(rb)]) == [0, len(discover())]
    finally:
        await a.close()
        await b.close()


async def test_failing_file_rolls_back_and_names_itself(empty_db: str, tmp_path: Path) -> None:
    """A broken file is rolled back whole and the error names it; earlier files stay."""
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half (id int); SELECT * FROM no_such_table;")
    conn = await database.connect(empty_db)
    try:
        with pytest.raises(MigrationError, match=r"0002_broken\.sql failed.*no_such_table"):
            await migrate(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('ok_table') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('half') IS NULL")
        assert [m.name for m in await pending(conn, tmp_path)] == ["broken"]
    finally:
        await conn.close()


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    """Only NNNN_name.sql files are migrations; anything else is an error, not skipped."""
    (tmp_path / "schema.sql").write_text("")
    with pytest.raises(MigrationError, match=r"schema\.sql"):
        discover(tmp_path)


async def test_cli_migrate_twice_says_nothing_is_pending(
    empty_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dialer migrate` applies every file once, then says there is nothing to do."""
    from dialer.cli import main

    monkeypatch.setenv("DIALER_DATABASE__URL", empty_db)
    # The CLI runs its own event loop: call it from a thread, as a shell would a process.
    assert await asyncio.to_thread(main, ["migrate"]) == 0
    first = capsys.readouterr().out
    assert [line for line in first.splitlines() if line.startswith("applied ")] == [
        f"applied {m.path.name}" for m in discover()
    ]
    assert await asyncio.to_thread(main, ["migrate"]) == 0
    assert capsys.readouterr().out.strip() == "nothing to apply: the schema is up to date"
