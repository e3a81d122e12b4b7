"""The calendar's operator commands run for real (`dialer.cli.main`) against a real
migrated PostgreSQL: `dialer blackout add|remove|list`, and `campaign create --rules`
presets and `--holiday-calendar` (docs/campaigns.md#calendar)."""

from __future__ import annotations

import uuid
from datetime import date, time

import asyncpg

from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture (with a configured caller id)


async def _campaign(conn: asyncpg.Connection, name: str = "c") -> uuid.UUID:
    cid: uuid.UUID = await conn.fetchval("INSERT INTO campaigns (name) VALUES ($1) RETURNING id", name)
    return cid


async def _blackouts(conn: asyncpg.Connection) -> list[tuple[uuid.UUID | None, date, str | None]]:
    rows = await conn.fetch("SELECT campaign_id, day, reason FROM blackout_dates ORDER BY day, campaign_id")
    return [(r["campaign_id"], r["day"], r["reason"]) for r in rows]


# ---------------------------------------------------------------- blackout


async def test_blackout_add_for_every_campaign_and_for_one(cli: Cli, conn: asyncpg.Connection) -> None:
    """`blackout add DAY` closes a day for every campaign (campaign_id null); with
    `--campaign ID` for that campaign only; adding it again keeps one row and takes
    the new reason."""
    cid = await _campaign(conn)
    code, out, err = await cli("blackout", "add", "2026-12-24", "2026-12-31", "--reason", "clinic closed")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "added: 2026-12-24 for every campaign (clinic closed)",
        "added: 2026-12-31 for every campaign (clinic closed)",
    ]
    code, out, _ = await cli("blackout", "add", "2026-05-15", "--campaign", str(cid), "--reason", "San Isidro")
    assert (code, out) == (0, f"added: 2026-05-15 for campaign {cid} (San Isidro)\n")
    code, out, _ = await cli("blackout", "add", "2026-12-24", "--reason", "Nochebuena")
    assert (code, out) == (0, "already listed: 2026-12-24 for every campaign (Nochebuena)\n")
    assert await _blackouts(conn) == [
        (cid, date(2026, 5, 15), "San Isidro"),
        (None, date(2026, 12, 24), "Nochebuena"),
        (None, date(2026, 12, 31), "clinic closed"),
    ]


async def test_blackout_remove_in_its_scope(cli: Cli, conn: asyncpg.Connection) -> None:
    """`blackout remove DAY` reopens the day in the scope it names: removing the global
    row leaves a campaign's own; a day not listed is exit 1 naming it."""
    cid = await _campaign(conn)
    await cli("blackout", "add", "2026-12-24")
    await cli("blackout", "add", "2026-12-24", "--campaign", str(cid))
    code, out, _ = await cli("blackout", "remove", "2026-12-24")
    assert (code, out) == (0, "removed: 2026-12-24 for every campaign\n")
    assert await _blackouts(conn) == [(cid, date(2026, 12, 24), None)]
    code, out, err = await cli("blackout", "remove", "2026-12-24", "2026-12-25", "--campaign", str(cid))
    assert code == 1
    assert out == f"removed: 2026-12-24 for campaign {cid}\n"
    assert f"no blackout for campaign {cid} on 2026-12-25" in err
    assert await _blackouts(conn) == []


async def test_blackout_list_all_or_for_one_campaign(cli: Cli, conn: asyncpg.Connection) -> None:
    """`blackout list` shows every row by day with its scope and reason; `--campaign`
    the rows that apply to it (its own and every campaign's); `--since` cuts the past.
    A reason is shown as written, never as markup."""
    a = await _campaign(conn, "Clinic A")
    b = await _campaign(conn, "Clinic B")
    await cli("blackout", "add", "2026-12-24", "--reason", "[red]closed[/red]")
    await cli("blackout", "add", "2026-05-15", "--campaign", str(a), "--reason", "San Isidro")
    await cli("blackout", "add", "2026-06-24", "--campaign", str(b), "--reason", "San Juan")
    code, out, _ = await cli("blackout", "list")
    assert code == 0
    lines = [line for line in out.splitlines() if "2026-" in line]
    assert [line.split()[0] for line in lines] == ["2026-05-15", "2026-06-24", "2026-12-24"]
    assert "Clinic A" in lines[0] and "San Isidro" in lines[0]
    assert "every campaign" in lines[2] and "[red]closed[/red]" in lines[2]
    code, out, _ = await cli("blackout", "list", "--campaign", str(a))
    assert "San Isidro" in out and "[red]closed[/red]" in out and "San Juan" not in out
    code, out, _ = await cli("blackout", "list", "--since", "2026-06-01")
    assert "San Isidro" not in out and "San Juan" in out


async def test_blackout_bad_input_is_named(cli: Cli, conn: asyncpg.Connection) -> None:
    """A bad date is a usage error naming it (exit 2); an unknown campaign is exit 1;
    nothing is written."""
    code, _, err = await cli("blackout", "add", "24/12/2026")
    assert code == 2 and "'24/12/2026' is not a date (YYYY-MM-DD" in err
    missing = uuid.uuid4()
    code, _, err = await cli("blackout", "add", "2026-12-24", "--campaign", str(missing))
    assert code == 1 and f"no campaign with id {missing}" in err
    assert await _blackouts(conn) == []


# ---------------------------------------------------------------- presets


async def _created(conn: asyncpg.Connection, out: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT calling_hours_start, calling_hours_end, calling_days, holiday_calendar, timezone "
        "FROM campaigns WHERE id = $1",
        uuid.UUID(out.strip()),
    )
    assert row is not None
    return row


async def test_rules_es_expands_into_the_ordinary_columns(cli: Cli, conn: asyncpg.Connection) -> None:
    """`--rules ES` sets 09:00-21:00, Monday-Friday, calendar ES and Europe/Madrid, and
    says so on stderr line by line (stdout stays the id alone)."""
    code, out, err = await cli("campaign", "create", "Recordatorios", "--rules", "ES")
    assert code == 0
    row = await _created(conn, out)
    assert (row["calling_hours_start"], row["calling_hours_end"]) == (time(9), time(21))
    assert list(row["calling_days"]) == [1, 2, 3, 4, 5]
    assert (row["holiday_calendar"], row["timezone"]) == ("ES", "Europe/Madrid")
    assert err.splitlines() == [
        "rules ES: Spain: 09:00-21:00, Monday to Friday, not on national public holidays "
        "(a starting point, not legal advice)",
        "  calling hours:    09:00-21:00  (preset ES)",
        "  calling days:     1,2,3,4,5  (preset ES)",
        "  holiday calendar: ES  (preset ES)",
        "  timezone:         Europe/Madrid  (preset ES)",
    ]


async def test_rules_us_and_explicit_options_override_the_preset(cli: Cli, conn: asyncpg.Connection) -> None:
    """`--rules US` is 08:00-21:00 every day; options given explicitly win over a
    preset's values and are shown as such."""
    code, out, err = await cli("campaign", "create", "US", "--rules", "US")
    assert code == 0
    row = await _created(conn, out)
    assert (row["calling_hours_start"], row["calling_hours_end"]) == (time(8), time(21))
    assert (row["calling_days"], row["holiday_calendar"], row["timezone"]) == (None, None, None)
    assert "  calling hours:    08:00-21:00  (preset US)" in err.splitlines()
    code, out, err = await cli(
        "campaign", "create", "Madrid", "--rules", "ES", "--hours", "10:00-14:00",
        "--holiday-calendar", "ES-MD", "--days", "1-6",
    )
    assert code == 0
    row = await _created(conn, out)
    assert (row["calling_hours_start"], row["calling_hours_end"]) == (time(10), time(14))
    assert list(row["calling_days"]) == [1, 2, 3, 4, 5, 6]
    assert (row["holiday_calendar"], row["timezone"]) == ("ES-MD", "Europe/Madrid")
    assert "  calling hours:    10:00-14:00  (--hours)" in err.splitlines()
    assert "  holiday calendar: ES-MD  (--holiday-calendar)" in err.splitlines()


async def test_create_refuses_an_unknown_calendar_or_preset(cli: Cli, conn: asyncpg.Connection) -> None:
    """`--holiday-calendar XX` and `--rules FR` are usage errors naming what is wrong;
    no campaign is created."""
    code, _, err = await cli("campaign", "create", "x", "--holiday-calendar", "ES-ZZ")
    assert code == 2 and "ES has no subdivision 'ZZ'" in err
    code, _, err = await cli("campaign", "create", "x", "--rules", "FR")
    assert code == 2 and "'FR'" in err
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0
