"""Scripts and settings checked when they are written (`campaign create`, `edit`) and
when a campaign starts, by the daemon's own validation; `campaign preview` renders
the script for real contacts. Through `dialer.cli.main` on a real database."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from pathlib import Path

import asyncpg
import pytest

from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture


async def _create(cli: Cli, *args: str) -> uuid.UUID:
    code, out, err = await cli("campaign", "create", "Clinic", *args)
    assert code == 0, err
    return uuid.UUID(out.strip())


async def _contacts(conn: asyncpg.Connection, cid: uuid.UUID, *custom: dict[str, str]) -> None:
    for i, fields in enumerate(custom):
        contact = await conn.fetchval(
            "INSERT INTO contacts (first_name, phone_number, custom_fields) VALUES ($1, $2, $3) RETURNING id",
            f"P{i}", f"+3491123450{i}", fields,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $2)", cid, contact
        )


async def test_create_refuses_an_unknown_placeholder(cli: Cli, conn: asyncpg.Connection) -> None:
    """`create --script '{{firstname}}'` exits 1 naming the placeholder, and creates nothing."""
    code, out, err = await cli("campaign", "create", "X", "--script", "Hola {{firstname}}")
    assert (code, out) == (1, "")
    assert err == "error: campaign not created: script_template: unknown placeholder '{{firstname}}'\n"
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_create_without_any_caller_id_warns(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --caller-id and no twilio.from_number: created (the daemon's own configuration may
    have one), with a warning saying it will not dial otherwise."""
    monkeypatch.delenv("DIALER_TWILIO__FROM_NUMBER")
    code, out, err = await cli("campaign", "create", "X")
    assert code == 0 and uuid.UUID(out.strip())
    assert err.startswith("warning: no caller id")


async def test_start_refuses_what_the_daemon_would(cli: Cli, conn: asyncpg.Connection) -> None:
    """A script broken behind the CLI's back (plain SQL) is refused at start with the reason; status unchanged."""
    cid = await _create(cli)
    await conn.execute("UPDATE campaigns SET script_template = 'Hi {{ nombre }}' WHERE id = $1", cid)
    code, out, err = await cli("campaign", "start", str(cid))
    assert (code, out) == (1, "")
    assert (
        err
        == f"error: cannot start campaign {cid}: script_template: unknown placeholder '{{{{ nombre }}}}'\n"
    )
    assert await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid) == "draft"


async def test_start_warns_how_many_contacts_miss_a_custom_field(cli: Cli, conn: asyncpg.Connection) -> None:
    """A {{custom.KEY}} that some contacts have no value for (absent or blank) is a warning with the count."""
    cid = await _create(cli, "--script", "Su cita: {{custom.Cita}}. {{custom.sala}}")
    await _contacts(conn, cid, {"cita": "lunes"}, {"cita": " "}, {"CITA": "martes", "sala": "3"})
    code, out, err = await cli("campaign", "start", str(cid))
    assert code == 0 and out == f"campaign {cid} is now active\n"
    lines = err.splitlines()
    assert "warning: {{custom.Cita}} has no value for 1 of 3 contacts: they would hear nothing there" in lines
    assert "warning: {{custom.sala}} has no value for 2 of 3 contacts: they would hear nothing there" in lines


async def test_edit_changes_only_what_is_given(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """`edit` sets the given options (a script from a file, hours, an end in the campaign's
    zone) and clears those given as `none`; everything else stays."""
    cid = await _create(cli, "--timezone", "Europe/Madrid", "--max-concurrent", "4", "--days", "1-5")
    script = tmp_path / "s.txt"
    script.write_text("Hola {{first_name}}")
    code, out, err = await cli(
        "campaign", "edit", cid.hex[:8], "--script", f"@{script}", "--hours", "10:00-14:00",
        "--end", "2030-01-10T20:00", "--max-concurrent", "none",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == f"campaign {cid} updated: script_template, max_concurrent_calls, calling_hours_start, " \
        "calling_hours_end, schedule_end\n"  # fmt: skip
    row = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid)
    assert row is not None
    assert row["script_template"] == "Hola {{first_name}}"
    assert (row["calling_hours_start"], row["calling_hours_end"]) == (time(10), time(14))
    assert row["schedule_end"] == datetime(2030, 1, 10, 19, 0)  # Madrid winter, +01:00
    assert row["max_concurrent_calls"] is None
    assert (row["calling_days"], row["timezone"], row["status"]) == (
        [1, 2, 3, 4, 5],
        "Europe/Madrid",
        "draft",
    )


async def _row(conn: asyncpg.Connection, cid: uuid.UUID) -> dict[str, object]:
    row = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid)
    assert row is not None
    return dict(row)


async def test_edit_refuses_what_create_refuses(cli: Cli, conn: asyncpg.Connection) -> None:
    """A bad script or a past end is refused by `edit` like by `create`, and nothing changes."""
    cid = await _create(cli, "--script", "Hola")
    before = await _row(conn, cid)
    code, _, err = await cli(
        "campaign", "edit", str(cid), "--script", "{{custom.}}", "--end", "2001-01-01T00:00Z"
    )
    assert code == 1
    assert err.startswith(
        f"error: campaign {cid} not changed: schedule_end 2001-01-01 00:00 UTC is in the past"
    )
    assert "unknown placeholder '{{custom.}}'" in err
    assert await _row(conn, cid) == before


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("active", "is active: pause it first"),
        ("completed", "is completed: a finished campaign is not edited"),
    ],
)
async def test_edit_only_while_draft_or_paused(
    cli: Cli, conn: asyncpg.Connection, status: str, message: str
) -> None:
    """An active campaign must be paused before an edit; a finished one is never edited."""
    cid = await _create(cli)
    await conn.execute("UPDATE campaigns SET status = $2::campaign_status WHERE id = $1", cid, "active")
    if status == "completed":
        await conn.execute("UPDATE campaigns SET status = 'completed' WHERE id = $1", cid)
    code, _, err = await cli("campaign", "edit", str(cid), "--hours", "09:00-10:00")
    assert code == 1 and message in err
    assert await conn.fetchval("SELECT calling_hours_start FROM campaigns WHERE id = $1", cid) is None


async def test_preview_renders_real_contacts(cli: Cli, conn: asyncpg.Connection) -> None:
    """`preview` prints the script as the first N contacts hear it, warning where a field is empty;
    --twiml prints the document the carrier gets."""
    cid = await _create(cli, "--script", "Hola {{first_name}}, su cita es el {{custom.Cita}}.")
    await _contacts(conn, cid, {"cita": "lunes 10:00"}, {}, {"cita": "martes"})
    code, out, err = await cli("campaign", "preview", "Clinic", "--contacts", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "Hola P0, su cita es el lunes 10:00."
    assert lines[3] == "Hola P1, su cita es el ."
    assert lines[0].startswith("— contact 1 of 2: P0 +34911234500 (") and len(lines) == 4
    assert err == "warning: {{custom.Cita}} has no value for this contact\n"
    code, out, _ = await cli("campaign", "preview", str(cid), "--contacts", "1", "--twiml")
    assert code == 0
    assert '<Say language="en-US" voice="alice">Hola P0, su cita es el lunes 10:00.</Say>' in out


async def test_preview_without_contacts_exits_1(cli: Cli) -> None:
    """A campaign with no contacts has nothing to preview: exit 1 saying so."""
    cid = await _create(cli, "--script", "Hola")
    code, _, err = await cli("campaign", "preview", str(cid))
    assert code == 1 and "has no contacts yet" in err


async def test_edit_sets_and_clears_the_holiday_calendar(cli: Cli, conn: asyncpg.Connection) -> None:
    """`edit --holiday-calendar ES` sets it, `none` clears it, an unknown code is a usage error."""
    cid = await _create(cli)
    assert (await cli("campaign", "edit", str(cid), "--holiday-calendar", "ES"))[0] == 0
    assert await conn.fetchval("SELECT holiday_calendar FROM campaigns WHERE id = $1", cid) == "ES"
    assert (await cli("campaign", "edit", str(cid), "--holiday-calendar", "none"))[0] == 0
    assert await conn.fetchval("SELECT holiday_calendar FROM campaigns WHERE id = $1", cid) is None
    code, _, err = await cli("campaign", "edit", str(cid), "--holiday-calendar", "XX-NOPE")
    assert code == 2 and "XX-NOPE" in err
