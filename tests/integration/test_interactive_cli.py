"""The operator's side of interactive calls: `campaign create --menu … --voicemail …
--language … --voice …` on a real database (a bad menu is refused at create, exit 1),
`campaign status` showing the tally of responses, and the answers in `campaign export`
and `dialer calls`."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from dialer.progress import responses_line
from tests.cli_helpers import Cli, cli

__all__ = ["cli"]  # the fixture, used below

MENU = {
    "1": {"outcome": "confirmed", "say": "Gracias {{first_name}}."},
    "2": {"outcome": "declined"},
    "0": {"action": "transfer", "to": "+34910000000"},
    "9": {"action": "opt_out", "say": "No volveremos a llamarle."},
    "*": {"action": "repeat"},
}


async def test_create_with_a_menu_voicemail_language_and_voice(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Every interactive option lands in its column; the menu is stored as the JSON object given."""
    (tmp_path / "menu.json").write_text(json.dumps(MENU), encoding="utf-8")
    (tmp_path / "vm.txt").write_text("Hola {{first_name}}, le llamábamos por su cita.", encoding="utf-8")
    code, out, err = await cli(
        "campaign", "create", "Citas", "--script", "Pulse 1 para confirmar",
        "--menu", f"@{tmp_path / 'menu.json'}", "--voicemail", f"@{tmp_path / 'vm.txt'}",
        "--machine-detection", "--language", "es-ES", "--voice", "Polly.Lucia",
        "--menu-repeats", "2", "--retry-no-response",
    )  # fmt: skip
    assert (code, err) == (0, "")
    row = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", uuid.UUID(out.strip()))
    assert row is not None
    assert row["menu"] == MENU
    assert (row["menu_repeats"], row["retry_no_response"], row["machine_detection"]) == (2, True, True)
    assert row["voicemail_template"] == "Hola {{first_name}}, le llamábamos por su cita."
    assert (row["language"], row["voice"]) == ("es-ES", "Polly.Lucia")


async def test_create_without_a_menu_keeps_todays_one_way_call(cli: Cli, conn: asyncpg.Connection) -> None:
    """No --menu: menu null, menu_repeats 1, no retry of no_response, no language or voice of its own."""
    code, out, _ = await cli("campaign", "create", "Aviso")
    assert code == 0
    row = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", uuid.UUID(out.strip()))
    assert row is not None
    assert (row["menu"], row["menu_repeats"], row["retry_no_response"], row["language"], row["voice"]) == (
        None,
        1,
        False,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("menu", "message"),
    [
        ('{"1": {"outcome": "Confirmed"}}', "--menu: key '1': outcome 'Confirmed' must be lowercase"),
        ('{"0": {"action": "transfer", "to": "910000000"}}', "--menu: key '0': transfer to '910000000'"),
        ('{"1": {"outcome": "voicemail"}}', "--menu: key '1': outcome 'voicemail' is reserved"),
        ('{"1": {"outcome": "ok", "say": "{{nombre}}"}}', "--menu: key '1' say: unknown placeholder"),
        ('["1"]', "--menu: must be a JSON object"),
        ("{1: 2}", "--menu: not JSON"),
        ("@/nonexistent/menu.json", "--menu /nonexistent/menu.json: cannot read the file"),
    ],
)
async def test_a_bad_menu_is_refused_at_create_with_the_reason(
    cli: Cli, conn: asyncpg.Connection, menu: str, message: str
) -> None:
    """A menu that is not a valid object of the documented shape: exit 1, the reason on stderr, no row."""
    code, _, err = await cli("campaign", "create", "Citas", "--menu", menu)
    assert code == 1
    assert message in err
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_a_bad_voicemail_text_is_refused_at_create(cli: Cli, conn: asyncpg.Connection) -> None:
    """An unknown placeholder in --voicemail: exit 1 naming it, no row."""
    code, _, err = await cli("campaign", "create", "Citas", "--voicemail", "Hola {{nombre}}")
    assert code == 1 and "--voicemail: unknown placeholder '{{nombre}}'" in err
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_status_shows_the_tally_of_responses(cli: Cli, conn: asyncpg.Connection) -> None:
    """`campaign status` prints the contacts' latest answers: outcomes first, then the reserved ones."""
    cid = await conn.fetchval(
        "INSERT INTO campaigns (name, status, menu) VALUES ('c', 'active', $1) RETURNING id", MENU
    )
    answers = (
        ["confirmed"] * 3 + ["declined"] + ["opted_out"] * 2 + ["no_response"] + ["voicemail"] * 2 + [None]
    )
    for i, answer in enumerate(answers):
        contact = await conn.fetchval(
            "INSERT INTO contacts (phone_number) VALUES ($1) RETURNING id", f"+3491100{i:04d}"
        )
        await conn.execute(
            "INSERT INTO campaign_contacts (campaign_id, contact_id, call_status, response) VALUES ($1, $2, $3, $4)",
            cid,
            contact,
            "completed" if answer else "pending",
            answer,
        )
    code, out, _ = await cli("campaign", "status", str(cid))
    assert code == 0
    assert "responses confirmed 3, declined 1, opted out 2, no response 1, voicemail 2" in " ".join(out.split())


async def test_export_and_calls_show_the_answer_and_the_keys(cli: Cli, conn: asyncpg.Connection) -> None:
    """campaign export writes response, responded_at (UTC) and the latest attempt's
    digits after fields; `dialer calls` lists each attempt's response and keys."""
    cid = await conn.fetchval(
        "INSERT INTO campaigns (name, caller_id, menu) VALUES ('c', '+34910000000', $1) RETURNING id", MENU
    )
    contact = await conn.fetchval("INSERT INTO contacts (phone_number) VALUES ('+34911000001') RETURNING id")
    await conn.execute(
        "INSERT INTO campaign_contacts (campaign_id, contact_id, call_status, call_count, response, responded_at) "
        "VALUES ($1, $2, 'completed', 1, 'confirmed', '2026-01-15 09:30:00')",
        cid, contact,
    )
    await conn.execute(
        "INSERT INTO calls (campaign_id, contact_id, status, outcome, response, digits, dialed_at) "
        "VALUES ($1, $2, 'completed', 'completed', 'confirmed', '*1', '2026-01-15 09:29:00')",
        cid, contact,
    )
    code, out, _ = await cli("campaign", "export", str(cid))
    assert code == 0
    header = out.splitlines()[0].split(",")
    assert header[header.index("fields") + 1:] == ["response", "responded_at", "digits"]
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["response"], row["responded_at"], row["digits"]) == ("confirmed", "2026-01-15T09:30:00Z", "*1")
    code, out, _ = await cli("calls", str(cid))
    assert code == 0
    assert "response" in out.splitlines()[0] and "keys" in out.splitlines()[0]
    assert "confirmed" in out.splitlines()[1] and "*1" in out.splitlines()[1].split()


def test_the_responses_line_orders_outcomes_by_count_then_reserved() -> None:
    """The campaign's own labels, most frequent first, then opted out, transferred, no response, voicemail."""
    line = responses_line(
        {"voicemail": 22, "declined": 14, "no_response": 40, "confirmed": 120, "opted_out": 3}
    )
    assert line == "confirmed 120, declined 14, opted out 3, no response 40, voicemail 22"
    assert responses_line({}) == ""


async def test_edit_sets_and_clears_the_interactive_options_and_the_rate(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """`campaign edit` sets a menu, its repeats, the retry of no_response, a voicemail,
    language, voice and the campaign's own dial rate; `none` clears each back to its
    default meaning; options not given stay."""
    code, out, _ = await cli("campaign", "create", "Citas", "--machine-detection", "--calls-per-second", "2")
    assert code == 0
    cid = uuid.UUID(out.strip())
    assert await conn.fetchval("SELECT calls_per_second FROM campaigns WHERE id = $1", cid) == 2
    (tmp_path / "menu.json").write_text(json.dumps(MENU), encoding="utf-8")
    code, out, err = await cli(
        "campaign", "edit", str(cid), "--menu", f"@{tmp_path / 'menu.json'}", "--menu-repeats", "3",
        "--retry-no-response", "--voicemail", "Le llamábamos, {{first_name}}.", "--language", "es-ES",
        "--voice", "Polly.Lucia", "--calls-per-second", "0.5",
    )  # fmt: skip
    assert (code, err) == (0, "")
    row = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid)
    assert row is not None
    assert (row["menu"], row["menu_repeats"], row["retry_no_response"]) == (MENU, 3, True)
    assert (row["voicemail_template"], row["language"], row["voice"]) == (
        "Le llamábamos, {{first_name}}.",
        "es-ES",
        "Polly.Lucia",
    )
    assert float(row["calls_per_second"]) == 0.5
    code, _, err = await cli(
        "campaign", "edit", str(cid), "--menu", "none", "--voicemail", "none", "--language", "none",
        "--voice", "none", "--calls-per-second", "none", "--no-retry-no-response",
    )  # fmt: skip
    assert (code, err) == (0, "")
    row = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid)
    assert row is not None
    cleared = ("menu", "voicemail_template", "language", "voice", "calls_per_second")
    assert [row[c] for c in cleared] == [None] * len(cleared)
    assert (row["menu_repeats"], row["retry_no_response"], row["machine_detection"]) == (3, False, True)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--menu", '{"1": {"outcome": "Confirmed"}}', "--menu: key '1': outcome 'Confirmed' must be lowercase"),
        ("--menu", "{1: 2}", "--menu: not JSON"),
        ("--voicemail", "Hola {{nombre}}", "--voicemail: unknown placeholder '{{nombre}}'"),
        ("--calls-per-second", "0", "must be a positive number of calls per second"),
        ("--calls-per-second", "fast", "'fast' is not a number"),
    ],
)
async def test_edit_refuses_a_bad_menu_voicemail_or_rate_and_changes_nothing(
    cli: Cli, conn: asyncpg.Connection, option: str, value: str, message: str
) -> None:
    """Checked as `create` checks them: a non-zero exit with the reason, the row unchanged."""
    code, out, _ = await cli("campaign", "create", "Citas")
    assert code == 0
    cid = uuid.UUID(out.strip())
    before = dict(await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid) or {})
    code, _, err = await cli("campaign", "edit", str(cid), option, value)
    assert code != 0
    assert message in err
    assert dict(await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid) or {}) == before
