"""`campaign status` says why nothing is being dialed, with the one function the
console uses (dialer.status), read from a real database through the real CLI."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture

MADRID = ZoneInfo("Europe/Madrid")


async def _heartbeat(conn: asyncpg.Connection) -> None:
    """A daemon with a fresh heartbeat, as `dialer run` registers itself."""
    await conn.execute(
        "INSERT INTO dialer_instances (id, hostname, pid) VALUES ($1, 'test', 1)", uuid.uuid4()
    )


async def _campaign(conn: asyncpg.Connection, status: str = "active", **columns: object) -> uuid.UUID:
    """A campaign with one contact (number in Madrid) and one call due an hour ago."""
    names = ["name", "status", *columns]
    values = ["Clinic", status, *columns.values()]
    params = ", ".join(f"${i + 1}" for i in range(len(values)))
    cid: uuid.UUID = await conn.fetchval(
        f"INSERT INTO campaigns ({', '.join(names)}) VALUES ({params}) RETURNING id", *values
    )
    contact = await conn.fetchval(
        "INSERT INTO contacts (phone_number, checked_at, number_valid, resolved_timezone) "
        "VALUES ('+34911234567', timezone('utc', now()), true, 'Europe/Madrid') RETURNING id"
    )
    assert contact is not None
    await conn.execute(
        "INSERT INTO campaign_contacts (campaign_id, contact_id, call_status) VALUES ($1, $2, 'scheduled')",
        cid, contact,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO calls (campaign_id, contact_id, scheduled_at) "
        "VALUES ($1, $2, timezone('utc', now()) - interval '1 hour')",
        cid, contact,
    )  # fmt: skip
    return cid


def _closed_hours(zone: ZoneInfo) -> tuple[str, str]:
    """A one-hour window that opens two hours from now in `zone` (so now is outside it)."""
    local = datetime.now(UTC).astimezone(zone)
    start = (local + timedelta(hours=2)).replace(minute=0)
    end = start + timedelta(hours=1)
    return start.strftime("%H:%M"), end.strftime("%H:%M")


def _opening(zone: ZoneInfo, start: str) -> str:
    """How the status names the next opening at `start` (HH:MM) in `zone`: the time
    alone today, with the weekday when it falls past local midnight."""
    local = datetime.now(UTC).astimezone(zone)
    hour, minute = (int(part) for part in start.split(":"))
    opening = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if opening <= local:
        opening += timedelta(days=1)
    return opening.strftime("%H:%M") if opening.date() == local.date() else opening.strftime("%a %H:%M")


def _text(out: str) -> str:
    return " ".join(out.split())


async def test_paused_campaign_says_paused_not_due_now(cli: Cli, conn: asyncpg.Connection) -> None:
    """A paused campaign with an overdue call says 'paused' and never 'due now'."""
    await _heartbeat(conn)
    cid = await _campaign(conn, "paused")
    code, out, _ = await cli("campaign", "status", str(cid))
    text = _text(out)
    assert code == 0
    assert "now paused" in text and "(held: paused)" in text
    assert "due now" not in text


async def test_waiting_for_calling_hours_names_the_next_window(cli: Cli, conn: asyncpg.Connection) -> None:
    """Outside the contact's calling hours: 'waiting for calling hours (next window HH:MM
    Europe/Madrid, in …)', and the due call is held, not 'due now'."""
    await _heartbeat(conn)
    start, end = _closed_hours(MADRID)
    cid = await _campaign(
        conn,
        timezone="Europe/Madrid",
        calling_hours_start=datetime.strptime(start, "%H:%M").time(),
        calling_hours_end=datetime.strptime(end, "%H:%M").time(),
    )
    code, out, _ = await cli("campaign", "status", str(cid))
    text = _text(out)
    assert code == 0
    assert f"now waiting for calling hours (next window {_opening(MADRID, start)} Europe/Madrid, in " in text
    assert "(held: waiting for calling hours" in text and "due now" not in text


async def test_the_contacts_zone_decides_not_the_campaigns(cli: Cli, conn: asyncpg.Connection) -> None:
    """A campaign whose own zone (Madrid) is inside its hours but whose due contact is in
    New York (hours behind) waits for New York's window: the claim's rule, not the campaign's zone."""
    await _heartbeat(conn)
    madrid_now = datetime.now(UTC).astimezone(MADRID)
    start = (madrid_now - timedelta(minutes=30)).strftime("%H:%M")
    end = (madrid_now + timedelta(minutes=30)).strftime("%H:%M")
    cid = await _campaign(
        conn,
        timezone="Europe/Madrid",
        calling_hours_start=datetime.strptime(start, "%H:%M").time(),
        calling_hours_end=datetime.strptime(end, "%H:%M").time(),
    )
    await conn.execute("UPDATE contacts SET resolved_timezone = 'America/New_York'")
    code, out, _ = await cli("campaign", "status", str(cid))
    assert code == 0
    opening = _opening(ZoneInfo("America/New_York"), start)
    assert f"now waiting for calling hours (next window {opening} America/New_York, in " in _text(out)


async def test_outside_calling_days(cli: Cli, conn: asyncpg.Connection) -> None:
    """On a day that is not a calling day in the contact's zone: 'outside calling days (next window …)'."""
    await _heartbeat(conn)
    today = datetime.now(UTC).astimezone(MADRID).isoweekday()
    cid = await _campaign(conn, timezone="Europe/Madrid", calling_days=[d for d in range(1, 8) if d != today])
    code, out, _ = await cli("campaign", "status", str(cid))
    assert code == 0
    assert "now outside calling days (next window " in _text(out)


async def test_no_daemon_and_last_error(cli: Cli, conn: asyncpg.Connection) -> None:
    """With no fresh heartbeat the status says so; a last_error is named as the reason first."""
    cid = await _campaign(conn)
    code, out, _ = await cli("campaign", "status", str(cid))
    assert code == 0 and "now no daemon has a fresh heartbeat" in _text(out)
    await conn.execute("UPDATE campaigns SET last_error = 'no caller id' WHERE id = $1", cid)
    code, out, _ = await cli("campaign", "status", str(cid))
    assert "now last_error: no caller id" in _text(out)


async def test_dialing_campaign_says_dialing(cli: Cli, conn: asyncpg.Connection) -> None:
    """An active campaign with a due call inside its hours and a live daemon says 'dialing' and 'due now'."""
    await _heartbeat(conn)
    cid = await _campaign(conn)
    code, out, _ = await cli("campaign", "status", str(cid))
    assert code == 0
    assert "now dialing" in _text(out) and "(due now)" in _text(out)


async def test_watch_without_a_terminal_prints_one_line_per_change(
    cli: Cli, conn: asyncpg.Connection
) -> None:
    """--watch into a pipe prints a line only when the campaign's line changes, until it is final."""
    await _heartbeat(conn)
    cid = await _campaign(conn)
    task = asyncio.create_task(cli("campaign", "status", str(cid), "--watch", "--interval", "0.05"))
    await asyncio.sleep(1.0)  # twenty polls of an unchanged campaign: still one line
    await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", cid)
    await asyncio.sleep(0.5)
    await conn.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = $1", cid)
    code, out, _ = await asyncio.wait_for(task, timeout=20)
    lines = out.splitlines()
    assert code == 0
    assert len(lines) == 3, out
    assert lines[0].endswith("; dialing") and " active: " in lines[0]
    assert lines[1].endswith("; paused")
    assert " cancelled: " in lines[2]
    assert all(line[:4].isdigit() and " UTC Clinic " in line for line in lines)


async def test_start_without_a_daemon_warns(cli: Cli, conn: asyncpg.Connection) -> None:
    """`campaign start` with no live daemon starts it and warns on stderr; with one, no warning."""
    first = await _campaign(conn, "draft")
    code, out, err = await cli("campaign", "start", str(first))
    assert (code, out) == (0, f"campaign {first} is now active\n")
    assert err.startswith("warning: no daemon has a fresh heartbeat")
    await _heartbeat(conn)
    await cli("campaign", "pause", str(first))
    assert await cli("campaign", "resume", str(first)) == (0, f"campaign {first} is now active\n", "")
