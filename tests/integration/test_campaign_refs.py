"""Campaigns named on the command line by id prefix or exact name, and --start/--end
without an offset taken in the campaign's zone (`dialer.cli.main`, real PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from dialer import database
from dialer.migrate import discover
from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture
from tests.conftest import PgServer


async def _campaign(conn: asyncpg.Connection, name: str, cid: str | None = None) -> uuid.UUID:
    value: uuid.UUID = await conn.fetchval(
        "INSERT INTO campaigns (id, name) VALUES (coalesce($2::uuid, gen_random_uuid()), $1) RETURNING id",
        name,
        cid,
    )
    return value


async def test_unique_prefix_and_exact_name_find_the_campaign(cli: Cli, conn: asyncpg.Connection) -> None:
    """A unique id prefix (any case, dashes optional) and an exact name both name the campaign."""
    cid = await _campaign(conn, "Flu shots", "abcdef12-3456-4789-8abc-def012345678")
    await _campaign(conn, "Other", "12345678-3456-4789-8abc-def012345678")
    assert (await cli("campaign", "start", "abcd"))[:2] == (0, f"campaign {cid} is now active\n")
    assert (await cli("campaign", "pause", "ABCDEF12-34"))[:2] == (0, f"campaign {cid} is now paused\n")
    assert (await cli("campaign", "resume", "Flu shots"))[:2] == (0, f"campaign {cid} is now active\n")
    code, out, _ = await cli("campaign", "status", "abcdef123456")
    assert code == 0 and str(cid) in out


async def test_ambiguous_reference_lists_the_candidates(cli: Cli, conn: asyncpg.Connection) -> None:
    """A prefix or name that fits several campaigns exits 1 naming each candidate, and changes nothing."""
    a = await _campaign(conn, "Weekly", "aaaa1111-0000-4000-8000-000000000001")
    b = await _campaign(conn, "Weekly", "aaaa2222-0000-4000-8000-000000000002")
    code, out, err = await cli("campaign", "start", "Weekly")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "'Weekly' matches 2 campaigns" in err and str(a) in err and str(b) in err
    code, _, err = await cli("campaign", "start", "aaaa")
    assert code == 1 and str(a) in err and str(b) in err
    assert await conn.fetchval("SELECT count(*) FROM campaigns WHERE status <> 'draft'") == 0
    assert (await cli("campaign", "start", "aaaa1"))[0] == 0


async def test_import_into_campaign_by_name(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """`contacts import --campaign NAME` links into the campaign the name means."""
    cid = await _campaign(conn, "Clinic")
    path = tmp_path / "c.csv"
    path.write_text("phone_number\n+34911234567\n")
    code, out, _ = await cli("contacts", "import", str(path), "--campaign", "Clinic")
    assert code == 0 and out.splitlines()[-1] == f"linked 1 contacts into campaign {cid}"


@pytest.mark.parametrize(
    ("args", "start", "end"),
    [
        # No offset: Madrid's wall clock (winter +01:00, summer +02:00).
        (["--timezone", "Europe/Madrid", "--start", "2030-01-10T09:00", "--end", "2030-07-10T21:00"],
         datetime(2030, 1, 10, 8, 0), datetime(2030, 7, 10, 19, 0)),
        # An offset wins over the zone.
        (["--timezone", "Europe/Madrid", "--start", "2030-01-10T09:00Z"], datetime(2030, 1, 10, 9, 0), None),
        # No --timezone: dialer.default_timezone (UTC in the test configuration).
        (["--start", "2030-01-10T09:00"], datetime(2030, 1, 10, 9, 0), None),
    ],
)  # fmt: skip
async def test_start_without_offset_is_the_campaign_zone(
    cli: Cli, conn: asyncpg.Connection, args: list[str], start: datetime, end: datetime | None
) -> None:
    """--start/--end without an offset are the campaign's local time, stored as UTC."""
    code, out, err = await cli("campaign", "create", "Zoned", *args)
    assert (code, err) == (0, "")
    row = await conn.fetchrow(
        "SELECT schedule_start, schedule_end FROM campaigns WHERE id = $1", uuid.UUID(out.strip())
    )
    assert row is not None
    assert (row["schedule_start"], row["schedule_end"]) == (start, end)


@pytest.mark.parametrize(
    ("when", "problem"),
    [("2030-03-31T02:30", "does not exist"), ("2030-10-27T02:30", "occurs twice")],
)
async def test_start_in_a_dst_change_is_refused(
    cli: Cli, conn: asyncpg.Connection, when: str, problem: str
) -> None:
    """A local time a DST change skips or repeats is refused (exit 2) instead of guessed."""
    code, _, err = await cli("campaign", "create", "X", "--timezone", "Europe/Madrid", "--start", when)
    assert code == 2
    assert f"--start {when.replace('T', ' ')} {problem} in Europe/Madrid" in err
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_migrate_prints_each_file_once(
    cli: Cli, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dialer migrate` at log level info prints one line per file on stdout and no log event for it."""
    name = f"dialer_migrate_{uuid.uuid4().hex[:12]}"
    await database.recreate_database(pg_server.admin_url, name)
    monkeypatch.setenv("DIALER_DATABASE__URL", pg_server.url_for(name))
    monkeypatch.setenv("DIALER_LOGGING__LEVEL", "info")
    try:
        code, out, err = await cli("migrate")
        assert (code, err) == (0, "")
        assert out.splitlines() == [f"applied {m.path.name}" for m in discover()]
        assert await cli("migrate") == (0, "nothing to apply: the schema is up to date\n", "")
    finally:
        admin = await asyncpg.connect(pg_server.admin_url)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
