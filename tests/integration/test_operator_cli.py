"""The operator's commands run for real (`dialer.cli.main`, and once as a subprocess)
against a real migrated PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import datetime, time
from pathlib import Path

import asyncpg
import pytest

from dialer.operator.campaigns import NO_DAEMON_WARNING
from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]


async def _campaign(conn: asyncpg.Connection, status: str = "draft") -> uuid.UUID:
    cid: uuid.UUID = await conn.fetchval(
        "INSERT INTO campaigns (name, status) VALUES ('c', $1::campaign_status) RETURNING id", status
    )
    return cid


async def _row(conn: asyncpg.Connection, cid: uuid.UUID) -> dict[str, object]:
    row = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid)
    assert row is not None, f"no campaign {cid}"
    return dict(row)


# ---------------------------------------------------------------- contacts import


async def test_contacts_import_reports_rows_and_summary(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """`contacts import` prints each rejected row with its line, then the one summary line; exit 0."""
    path = tmp_path / "c.csv"
    path.write_text("phone_number,first_name\n+34911234567,Ana\nnope,Bob\n+34911234567,ana\n")
    code, out, err = await cli("contacts", "import", str(path))
    assert (code, err) == (3, "")  # 3: imported, but rows were rejected
    assert out.splitlines() == [
        "line 3: 'nope' has no country code (write +<country> or pass --default-region)",
        "line 4: duplicate phone number and name (same as line 2), skipped",
        "imported 1 new, 0 existing, 2 rejected (see above)",
    ]
    code, out, _ = await cli("contacts", "import", str(path))
    assert out.splitlines()[-1] == "imported 0 new, 1 existing, 2 rejected (see above)"
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 1


async def test_contacts_import_missing_column_exits_1(cli: Cli, tmp_path: Path) -> None:
    """A file without phone_number fails with exit 1 and one stderr line naming the file and its columns."""
    path = tmp_path / "bad.csv"
    path.write_text("name,fax\nAna,+34911234567\n")
    code, out, err = await cli("contacts", "import", str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {path}: no phone number column (found: name, fax); name it phone_number")


async def test_contacts_import_into_campaign(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """--campaign links the imported contacts and says how many."""
    cid = await _campaign(conn)
    path = tmp_path / "c.csv"
    path.write_text("phone_number\n+34911234567\n+34911234568\n")
    code, out, _ = await cli("contacts", "import", str(path), "--campaign", str(cid))
    assert code == 0
    assert out.splitlines()[-1] == f"linked 2 contacts into campaign {cid}"
    assert await conn.fetchval("SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1", cid) == 2


async def test_import_into_final_campaign_is_refused(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A cancelled campaign takes no more contacts: exit 1, nothing imported."""
    cid = await _campaign(conn, "cancelled")
    path = tmp_path / "c.csv"
    path.write_text("phone_number\n+34911234567\n")
    code, _, err = await cli("contacts", "import", str(path), "--campaign", str(cid))
    assert code == 1
    assert err == f"error: campaign {cid} is cancelled: it takes no more contacts\n"
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


# ---------------------------------------------------------------- campaign create


async def test_campaign_create_sets_exactly_the_given_columns(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Every option lands in its column; times with an offset become UTC; naive times are UTC; the rest keep defaults."""
    script = tmp_path / "script.txt"
    script.write_text("Hola {{first_name}}")
    code, out, err = await cli(
        "campaign", "create", "Spring",
        "--script", f"@{script}",
        "--hours", "9:00-21:00",
        "--days", "1-5",
        "--timezone", "Europe/Madrid",
        "--max-retries", "3",
        "--retry-delay", "30",
        "--caller-id", "+34 911 234 567",
        "--max-concurrent", "5",
        "--start", "2030-03-01T09:00:00+01:00",
        "--end", "2030-03-31T18:00:00",
        "--machine-detection",
        "--record",
    )  # fmt: skip
    assert (code, err) == (0, "")
    cid = uuid.UUID(out.strip())
    row = await _row(conn, cid)
    expected = {
        "name": "Spring",
        "status": "draft",
        "script_template": "Hola {{first_name}}",
        "calling_hours_start": time(9, 0),
        "calling_hours_end": time(21, 0),
        "calling_days": [1, 2, 3, 4, 5],
        "timezone": "Europe/Madrid",
        "max_retries": 3,
        "retry_delay_minutes": 30,
        "caller_id": "+34911234567",
        "max_concurrent_calls": 5,
        "schedule_start": datetime(2030, 3, 1, 8, 0),
        # No offset: Madrid's wall clock (summer time has begun on 2030-03-31).
        "schedule_end": datetime(2030, 3, 31, 16, 0),
        "machine_detection": True,
        "record_calls": True,
        "description": None,
        "last_error": None,
        "total_calls": 0,
    }
    assert {k: row[k] for k in expected} == expected


async def test_campaign_create_defaults(cli: Cli, conn: asyncpg.Connection) -> None:
    """A bare create leaves every optional column at the schema's default."""
    code, out, _ = await cli("campaign", "create", "Bare", "--days", "1,3,3,7")
    row = await _row(conn, uuid.UUID(out.strip()))
    assert code == 0
    assert (row["max_retries"], row["retry_delay_minutes"], row["calling_hours_start"]) == (2, 60, None)
    assert (row["timezone"], row["caller_id"], row["calling_days"]) == (None, None, [1, 3, 7])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hours", "9-21"], "'9-21' is not HH:MM-HH:MM"),
        (["--hours", "25:00-21:00"], "impossible time of day"),
        (["--timezone", "Europe/Atlantis"], "unknown IANA time zone 'Europe/Atlantis'"),
        (["--caller-id", "911234567"], "is not an E.164 number"),
        (["--days", "0-5"], "is not a list of ISO weekdays"),
        (["--start", "2030-03-02", "--end", "2030-03-01"], "--end (2030-03-01 00:00 UTC) is before --start"),
        (["--start", "tomorrow"], "is not an ISO 8601 time"),
    ],
)
async def test_campaign_create_validation(cli: Cli, conn: asyncpg.Connection, args: list[str], message: str) -> None:
    """Bad options exit 2 with a clear message on stderr and create nothing."""
    code, out, err = await cli("campaign", "create", "X", *args)
    assert (code, out) == (2, "")
    assert message in err
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0


# ---------------------------------------------------------------- steering


@pytest.mark.parametrize(
    ("command", "before", "after"),
    [
        ("start", "draft", "active"),
        ("start", "paused", "active"),
        ("pause", "active", "paused"),
        ("resume", "paused", "active"),
        ("cancel", "draft", "cancelled"),
        ("cancel", "active", "cancelled"),
        ("cancel", "paused", "cancelled"),
    ],
)
async def test_transitions_write_only_status(
    cli: Cli, conn: asyncpg.Connection, command: str, before: str, after: str
) -> None:
    """An allowed transition changes status (and the trigger's updated_at), nothing else."""
    cid = await _campaign(conn, before)
    old = await _row(conn, cid)
    code, out, err = await cli("campaign", command, str(cid))
    assert (code, out) == (0, f"campaign {cid} is now {after}\n")
    # No daemon runs here: an activation warns (tests/integration/test_status_reasons.py).
    assert err == ("" if after != "active" else NO_DAEMON_WARNING + "\n")
    new = await _row(conn, cid)
    changed = {k for k in old if old[k] != new[k]}
    assert changed == {"status", "updated_at"}
    assert new["status"] == after


@pytest.mark.parametrize(
    ("command", "status", "message"),
    [
        ("pause", "draft", "status cannot change from draft to paused (from draft only to active or cancelled)"),
        ("start", "completed", "status cannot change from completed to active (completed is final)"),
        ("resume", "cancelled", "status cannot change from cancelled to active (cancelled is final)"),
        ("cancel", "completed", "status cannot change from completed to cancelled (completed is final)"),
    ],
)
async def test_refused_transitions_exit_1(
    cli: Cli, conn: asyncpg.Connection, command: str, status: str, message: str
) -> None:
    """A transition the database refuses changes nothing and exits 1 with its one line."""
    cid = await _campaign(conn, status)
    old = await _row(conn, cid)
    code, out, err = await cli("campaign", command, str(cid))
    assert (code, out) == (1, "")
    assert err == f"error: campaign {cid}: {message}\n"
    assert await _row(conn, cid) == old


@pytest.mark.parametrize(
    ("command", "status"), [("start", "active"), ("resume", "active"), ("pause", "paused"), ("cancel", "cancelled")]
)
async def test_a_campaign_already_in_the_target_status_is_left_alone(
    cli: Cli, conn: asyncpg.Connection, command: str, status: str
) -> None:
    """Asking for the status a campaign already has succeeds and writes nothing (no
    history row either)."""
    cid = await _campaign(conn, status)
    old = await _row(conn, cid)
    history = await conn.fetchval("SELECT count(*) FROM campaign_status_history WHERE campaign_id = $1", cid)
    # No daemon runs here: a campaign left active says so (the warning), nothing else.
    warning = NO_DAEMON_WARNING + "\n" if status == "active" else ""
    assert await cli("campaign", command, str(cid)) == (0, f"campaign {cid} is now {status}\n", warning)
    assert await _row(conn, cid) == old
    assert await conn.fetchval(
        "SELECT count(*) FROM campaign_status_history WHERE campaign_id = $1", cid
    ) == history


async def test_history_lists_every_change_with_who_made_it(cli: Cli, conn: asyncpg.Connection) -> None:
    """`campaign history` prints the creation and each change, oldest first, naming
    the role and the program (the CLI's own changes say `dialer cli`)."""
    cid = await _campaign(conn)
    assert (await cli("campaign", "start", str(cid)))[0] == 0
    assert (await cli("campaign", "pause", str(cid)))[0] == 0
    await conn.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = $1", cid)
    code, out, err = await cli("campaign", "history", str(cid))
    assert (code, err) == (0, "")
    role = await conn.fetchval("SELECT current_user")
    changes = [line.split("  ", 1)[1].split() for line in out.splitlines()]
    assert changes == [
        ["created", "draft", role, "(dialer)"],
        ["draft", "→", "active", role, "(dialer", "cli)"],
        ["active", "→", "paused", role, "(dialer", "cli)"],
        ["paused", "→", "cancelled", role, "(dialer)"],
    ]
    missing = uuid.uuid4()
    assert await cli("campaign", "history", str(missing)) == (1, "", f"error: no campaign with id {missing}\n")


async def test_unknown_ids(cli: Cli) -> None:
    """An unknown id exits 1; so does a reference no campaign's id prefix or name matches."""
    missing = uuid.uuid4()
    assert await cli("campaign", "pause", str(missing)) == (1, "", f"error: no campaign with id {missing}\n")
    code, _, err = await cli("campaign", "pause", "42")
    assert code == 1 and "no campaign has the id, id prefix or name '42'" in err


async def test_add_contacts_all_and_csv(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """--all links every contact once; --csv imports and links; repeating adds nothing."""
    cid = await _campaign(conn)
    await conn.execute("INSERT INTO contacts (phone_number) VALUES ('+34911234567'), ('+34911234568')")
    assert await cli("campaign", "add-contacts", str(cid), "--all") == (0, f"added 2 contacts to campaign {cid}\n", "")
    assert await cli("campaign", "add-contacts", str(cid), "--all") == (0, f"added 0 contacts to campaign {cid}\n", "")
    path = tmp_path / "more.csv"
    path.write_text("phone_number\n+34911234568\n+34911234569\n")
    code, out, _ = await cli("campaign", "add-contacts", str(cid), "--csv", str(path))
    assert code == 0
    assert out.splitlines() == [
        "imported 1 new, 1 existing, 0 rejected (see above)",
        f"linked 1 contacts into campaign {cid}",
    ]
    assert await conn.fetchval("SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1", cid) == 3
    code, _, err = await cli("campaign", "add-contacts", str(cid))
    assert code == 2 and "one of the arguments --all --csv is required" in err


# ---------------------------------------------------------------- status and list


async def _populated(conn: asyncpg.Connection) -> uuid.UUID:
    """A campaign with 5 contacts in mixed dispositions and calls in every state."""
    cid = await _campaign(conn, "active")
    await conn.execute("UPDATE campaigns SET name = 'Spring', last_error = 'no caller id' WHERE id = $1", cid)
    ids = await conn.fetch(
        "INSERT INTO contacts (phone_number) SELECT '+3491123456' || g FROM generate_series(1, 5) g RETURNING id"
    )
    dispositions = ["completed", "completed", "failed", "scheduled", "pending"]
    for row, disposition in zip(ids, dispositions, strict=True):
        await conn.execute(
            "INSERT INTO campaign_contacts (campaign_id, contact_id, call_status) VALUES ($1, $2, $3)",
            cid, row["id"], disposition,
        )  # fmt: skip
    now = "timezone('utc', now())"
    await conn.execute(
        f"""
        INSERT INTO calls (campaign_id, contact_id, status, call_sid, retry_count, scheduled_at, dialed_at) VALUES
          ($1, $2, 'completed', 'CA1', 0, {now}, {now} - interval '10 seconds'),
          ($1, $3, 'completed', 'CA2', 0, {now}, {now} - interval '20 seconds'),
          ($1, $4, 'failed', 'CA3', 0, {now}, {now} - interval '5 minutes'),
          ($1, $5, 'scheduled', NULL, 0, '2099-01-01 09:00:00', NULL)
        """,
        cid, ids[0]["id"], ids[1]["id"], ids[2]["id"], ids[3]["id"],
    )  # fmt: skip
    return cid


async def test_status_shows_counters_dispositions_rate_and_next_call(cli: Cli, conn: asyncpg.Connection) -> None:
    """`campaign status ID` prints the counters, dispositions, progress, dial rate, next due call and last error."""
    cid = await _populated(conn)
    code, out, err = await cli("campaign", "status", str(cid))
    assert (code, err) == (0, "")
    text = " ".join(out.split())
    assert f"Spring {cid} active" in text
    assert "3/5 contacts final (60%)" in text
    assert "calls total 4, pending 1, successful 2, failed 1" in text
    assert "dispositions pending 1, scheduled 1, completed 2, failed 1" in text
    assert "dial rate 2 calls in the last minute" in text
    assert "next due call 2099-01-01 09:00:00 UTC (in " in text
    assert "last error: no caller id" in text


async def test_status_without_id_shows_open_campaigns_only(cli: Cli, conn: asyncpg.Connection) -> None:
    """Without an id, status covers every campaign that is not final."""
    open_id = await _campaign(conn, "paused")
    done_id = await _campaign(conn, "completed")
    code, out, _ = await cli("campaign", "status")
    assert code == 0
    assert str(open_id) in out and str(done_id) not in out


async def test_status_watch_ends_when_campaign_is_final(cli: Cli, conn: asyncpg.Connection) -> None:
    """--watch on a final campaign draws once and returns instead of waiting for Ctrl-C."""
    cid = await _campaign(conn, "completed")
    code, out, _ = await asyncio.wait_for(cli("campaign", "status", str(cid), "--watch"), timeout=10)
    assert code == 0 and "completed" in out


async def test_status_watch_follows_changes(cli: Cli, conn: asyncpg.Connection) -> None:
    """--watch keeps polling and stops once another session makes the campaign final."""
    cid = await _campaign(conn, "active")
    task = asyncio.create_task(cli("campaign", "status", str(cid), "--watch", "--interval", "0.05"))
    await asyncio.sleep(0.5)
    assert not task.done()
    await conn.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = $1", cid)
    code, out, _ = await asyncio.wait_for(task, timeout=10)
    assert code == 0 and "cancelled" in out


async def test_status_of_unknown_campaign_exits_1(cli: Cli) -> None:
    """status of an id that does not exist exits 1 with one line."""
    missing = uuid.uuid4()
    assert await cli("campaign", "status", str(missing)) == (1, "", f"error: no campaign with id {missing}\n")


async def test_list_shows_every_campaign(cli: Cli, conn: asyncpg.Connection) -> None:
    """`campaign list` shows each campaign's id, status and contact count."""
    cid = await _populated(conn)
    other = await _campaign(conn, "cancelled")
    code, out, _ = await cli("campaign", "list")
    assert code == 0
    line = next(x for x in out.splitlines() if str(cid) in x)
    assert line.split()[1:5] == ["Spring", "active", "5", "4"]
    assert str(other) in out


# ---------------------------------------------------------------- dnc


async def test_dnc_add_remove(cli: Cli, conn: asyncpg.Connection) -> None:
    """dnc add normalises to E.164 and is idempotent; remove takes it off, and removing again exits 1."""
    assert await cli("dnc", "add", "911 234 567", "--default-region", "es", "--reason", "asked") == (
        0, "added: +34911234567\n", "",
    )  # fmt: skip
    assert await cli("dnc", "add", "+34911234567") == (0, "already listed: +34911234567\n", "")
    row = await conn.fetchrow("SELECT phone_number, reason FROM do_not_call")
    assert row is not None
    assert tuple(row) == ("+34911234567", "asked")
    assert await cli("dnc", "remove", "+34 911 234 567") == (0, "removed: +34911234567\n", "")
    assert await conn.fetchval("SELECT count(*) FROM do_not_call") == 0
    assert await cli("dnc", "remove", "+34911234567") == (
        1, "", "error: +34911234567 is not on the do-not-call list\n",
    )  # fmt: skip
    code, _, err = await cli("dnc", "add", "12")
    assert code == 2 and err.startswith("error: '12' has no country code")


async def test_dnc_import(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """dnc import lists valid numbers with their reason (or --reason), reports bad lines, counts known ones."""
    await conn.execute("INSERT INTO do_not_call (phone_number, reason) VALUES ('+34911234567', 'old')")
    path = tmp_path / "dnc.csv"
    path.write_text("Phone Number,Reason\n+34911234567,new\n+34911234568,\nxx,\n+34911234569,complaint\n")
    code, out, err = await cli("dnc", "import", str(path), "--reason", "bulk")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "line 4: 'xx' has no country code (write +<country> or pass --default-region)",
        "added 2 new, 1 already listed, 1 rejected (see above)",
    ]
    rows = await conn.fetch("SELECT phone_number, reason FROM do_not_call ORDER BY 1")
    assert [tuple(r) for r in rows] == [
        ("+34911234567", "old"),
        ("+34911234568", "bulk"),
        ("+34911234569", "complaint"),
    ]


# ---------------------------------------------------------------- a real process


def test_real_subprocess(db_url: str, tmp_path: Path) -> None:
    """`python -m dialer` as a separate process: create, import into it, start, refuse a second start."""
    config = tmp_path / "config.toml"
    config.write_text("")
    env = {**os.environ, "DIALER_CONFIG": str(config), "DIALER_DATABASE__URL": db_url}

    def dialer(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dialer", *argv], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60
        )

    created = dialer("campaign", "create", "Sub", "--hours", "22:00-02:00")
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("phone_number\n+34911234567\n")
    imported = dialer("contacts", "import", str(csv_path), "--campaign", cid)
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 new, 0 existing, 0 rejected (see above)" in imported.stdout
    assert dialer("campaign", "start", cid).returncode == 0
    assert dialer("campaign", "cancel", cid).returncode == 0
    again = dialer("campaign", "start", cid)
    assert again.returncode == 1
    assert again.stderr.strip().endswith("status cannot change from cancelled to active (cancelled is final)")
    assert dialer("campaign", "bogus").returncode == 2
