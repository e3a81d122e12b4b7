"""Results out (docs/campaigns.md#results): the campaign_results view, `dialer
campaign export` (CSV, and --excel for spreadsheets) and `dialer calls`, on a
campaign the real daemon ran to the end against the simulator."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from tests.cli_helpers import Cli, cli  # noqa: F401  (the in-process CLI fixture)
from tests.conftest import StartDaemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import wait_for

EXPORT_COLUMNS_AT_LEAST = [
    "campaign_id", "contact_id", "first_name", "last_name", "phone_number", "call_status",
    "call_count", "last_call_at", "outcome", "answered_by", "duration", "error_code",
    "error_message", "recording_url", "fields",
]


async def _latest_attempts(conn: asyncpg.Connection, cid: uuid.UUID) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (k.contact_id) k.contact_id, k.outcome, k.error_code, k.duration
        FROM calls k WHERE k.campaign_id = $1 ORDER BY k.contact_id, k.retry_count DESC
        """,
        cid,
    )
    return {str(r["contact_id"]): r for r in rows}


async def test_export_of_a_finished_200_contact_campaign_matches_the_calls(
    cli: Cli, conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """A 200-contact campaign (answered, busy then answered, no answer twice, a number
    the carrier refuses, one on the do-not-call list) run to completion exports 200
    rows whose disposition, outcome, error and call count match campaign_contacts and
    the latest calls row of each contact; the history ends with the daemon's own
    completion, recorded as `dialer run`."""
    cid = await make_campaign(conn, max_retries=1, retry_delay_minutes=0, timezone="Europe/Madrid")
    plan = [["answered"], ["busy", "answered"], ["no-answer"], ["error:400:21211"], ["answered"]]
    numbers = [madrid_number(i) for i in range(200)]
    for i, number in enumerate(numbers):
        sim.simulator.script(number, plan[i % 5])
        if i % 5 == 4:
            await conn.execute("INSERT INTO do_not_call (phone_number) VALUES ($1)", number)
    await add_contacts(conn, cid, numbers, first_name="Ana")
    await conn.execute("UPDATE campaign_contacts SET fields = '{\"cita\": \"lunes\"}' WHERE campaign_id = $1", cid)
    await start_daemon(max_concurrent_calls=100, calls_per_second=500, bucket_size=50)
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)

    async def done() -> bool:
        return bool(await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid) == "completed")

    await wait_for(done, 90, "the campaign to complete")
    code, out, err = await cli("campaign", "export", str(cid))
    assert (code, err) == (0, "")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 200
    # Every documented column, in the documented order (the view may add more).
    assert [c for c in rows[0] if c in EXPORT_COLUMNS_AT_LEAST] == EXPORT_COLUMNS_AT_LEAST
    latest = await _latest_attempts(conn, cid)
    contacts = {
        str(r["contact_id"]): r
        for r in await conn.fetch(
            "SELECT contact_id, call_status, call_count FROM campaign_contacts WHERE campaign_id = $1", cid
        )
    }
    by_status: dict[str, int] = {}
    for row in rows:
        attempt, contact = latest[row["contact_id"]], contacts[row["contact_id"]]
        assert row["campaign_id"] == str(cid)
        assert row["outcome"] == (attempt["outcome"] or "")
        assert row["error_code"] == ("" if attempt["error_code"] is None else str(attempt["error_code"]))
        assert row["duration"] == ("" if attempt["duration"] is None else str(attempt["duration"]))
        assert (row["call_status"], int(row["call_count"])) == (contact["call_status"], contact["call_count"])
        assert row["fields"] == '{"cita": "lunes"}'
        by_status[row["call_status"]] = by_status.get(row["call_status"], 0) + 1
    assert by_status == {"completed": 80, "failed": 40, "invalid_number": 40, "do_not_call": 40}
    assert {r["outcome"] for r in rows if r["call_status"] == "do_not_call"} == {"do-not-call"}
    history = await conn.fetch(
        "SELECT from_status::text, to_status::text, changed_by FROM campaign_status_history "
        "WHERE campaign_id = $1 ORDER BY id",
        cid,
    )
    assert (history[-1]["from_status"], history[-1]["to_status"]) == ("active", "completed")
    assert history[-1]["changed_by"].endswith("(dialer run)")

    code, out, err = await cli("calls", str(cid), "--failed")
    assert (code, err) == (0, "")
    failed = await conn.fetch("SELECT call_sid, error_code FROM calls WHERE campaign_id = $1 AND status = 'failed'", cid)
    listed = [line for line in out.splitlines()[1:] if line.strip()]
    assert len(listed) == len(failed) > 0
    assert sum("21211" in line for line in listed) == 40
    assert sum(" no-answer " in f" {line} " for line in listed) == 80  # two tries each


async def test_excel_export_is_semicolons_a_bom_and_local_times(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """--excel writes ';'-separated UTF-8 with a byte-order mark to the file, times in
    the campaign's zone (Madrid: UTC+1 in winter), and a name a spreadsheet would run
    as a formula is shown as text; the phone number is left as it is."""
    cid = await make_campaign(conn, timezone="Europe/Madrid")
    [contact] = await add_contacts(conn, cid, [madrid_number(1)], first_name="=HYPERLINK(\"x\")", last_name="Núñez")
    await conn.execute(
        "UPDATE campaign_contacts SET call_status = 'completed', call_count = 1, last_call_at = $2 "
        "WHERE contact_id = $1",
        contact, datetime(2026, 1, 15, 9, 30),
    )
    await conn.execute(
        "INSERT INTO calls (campaign_id, contact_id, status, outcome, duration) VALUES ($1, $2, 'completed', 'completed', 42)",
        cid, contact,
    )
    target = tmp_path / "results.csv"
    code, out, err = await cli("campaign", "export", str(cid), "--excel", "--output", str(target))
    assert (code, err) == (0, "")
    assert out == f"wrote 1 rows to {target}\n"
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    [row] = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert row["last_call_at"] == "2026-01-15 10:30:00"
    assert row["first_name"] == "'=HYPERLINK(\"x\")"
    assert (row["last_name"], row["phone_number"], row["duration"]) == ("Núñez", madrid_number(1), "42")
    code, out, _ = await cli("campaign", "export", str(cid))
    [plain] = list(csv.DictReader(io.StringIO(out)))
    assert (plain["last_call_at"], plain["first_name"]) == ("2026-01-15T09:30:00Z", "=HYPERLINK(\"x\")")


async def test_export_and_calls_of_an_unknown_campaign_exit_1(cli: Cli) -> None:
    """An unknown id is one line and exit 1, for both commands; nothing is written."""
    missing = uuid.uuid4()
    assert await cli("campaign", "export", str(missing)) == (1, "", f"error: no campaign with id {missing}\n")
    assert await cli("calls", str(missing)) == (1, "", f"error: no campaign with id {missing}\n")


@pytest.mark.parametrize("columns", [EXPORT_COLUMNS_AT_LEAST])
async def test_the_view_has_the_documented_columns(conn: asyncpg.Connection, columns: list[str]) -> None:
    """campaign_results has every documented column and is security_invoker."""
    names = [
        r["attname"]
        for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'campaign_results'::regclass AND attnum > 0 "
            "ORDER BY attnum"
        )
    ]
    assert set(columns) <= set(names)
    assert "security_invoker=true" in await conn.fetchval(
        "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'campaign_results'::regclass"
    )
