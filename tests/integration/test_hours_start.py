"""A campaign with calling hours starts dialing within about a second of becoming
active, however it was created, and so do contacts added to a running campaign: the
scheduler's cached view of a campaign's time zones (docs/architecture.md, Claim) never
holds back due work."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from dialer import cli
from dialer.carrier.simulator import RunningSimulator
from dialer.store.housekeeping import HOUSEKEEPING_LOCK
from tests.conftest import StartDaemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import wait_for
from tests.invariants import assert_never_dialed

ZONE = "Europe/Madrid"
CLOSED_ZONE = "Asia/Tokyo"  # 7 or 8 hours from Madrid: outside a two-hour window around Madrid's now
FIRST_DIAL_WITHIN = 1.5  # seconds


def hours_around_now() -> tuple[datetime, datetime]:
    """A two-hour window of local Madrid time centred on now (it may cross midnight)."""
    local = datetime.now(UTC).astimezone(ZoneInfo(ZONE)).replace(tzinfo=None, second=0, microsecond=0)
    return local - timedelta(hours=1), local + timedelta(hours=1)


def hour_fields() -> dict[str, object]:
    start, end = hours_around_now()
    return {"timezone": ZONE, "calling_hours_start": start.time(), "calling_hours_end": end.time()}


async def first_dial_after(sim: RunningSimulator, numbers: list[str], since: float) -> float:
    """Seconds from `since` (monotonic) until the first of `numbers` is dialed."""

    async def dialed() -> bool:
        return any(c.to in numbers for c in sim.simulator.calls)

    await wait_for(dialed, 10, f"a dial to one of {numbers}", interval=0.02)
    return min(c.created_at for c in sim.simulator.calls if c.to in numbers) - since


async def run_to_the_end(conn: asyncpg.Connection, sim: RunningSimulator) -> None:
    """An ordinary campaign without hours, run to completion: the daemon is warm and
    idle, as after any finished campaign."""
    cid = await make_campaign(conn, status="active", max_retries=0)
    number = madrid_number(9000)
    sim.simulator.script(number, ["answered"])
    await add_contacts(conn, cid, [number])

    async def completed() -> bool:
        return str(await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid)) == "completed"

    await wait_for(completed, 15, "the warm-up campaign to complete")


async def sql_campaign(conn: asyncpg.Connection, numbers: list[str], *, active_first: bool) -> float:
    """Create a campaign with hours the way a psql user would, one autocommit statement
    at a time; contacts with and without their own zone. Returns when (monotonic) the
    statement that made it dialable committed."""
    if active_first:
        cid = await make_campaign(conn, status="active", **hour_fields())
    else:
        cid = await make_campaign(conn, **hour_fields())
    await add_contacts(conn, cid, numbers[:1], timezone=ZONE)
    await add_contacts(conn, cid, numbers[1:])
    if active_first:
        return time.monotonic()
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
    return time.monotonic()


@pytest.mark.parametrize("active_first", [True, False], ids=["inserted-active", "activated-by-update"])
async def test_sql_campaign_with_hours_dials_within_a_second(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon, active_first: bool
) -> None:
    """A campaign inserted by SQL with calling hours around now is dialed at once
    (within ~1 s), on a daemon that already ran another campaign to the end."""
    await start_daemon()
    await run_to_the_end(conn, sim)
    for round_ in range(3):
        numbers = [madrid_number(100 * round_ + i) for i in range(3)]
        since = await sql_campaign(conn, numbers, active_first=active_first)
        latency = await first_dial_after(sim, numbers, since)
        assert latency < FIRST_DIAL_WITHIN, f"round {round_}: first dial after {latency:.2f} s"


async def test_cli_campaign_with_hours_dials_within_a_second(
    db_url: str, conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same campaign made with `dialer campaign create --hours`, `add-contacts
    --csv` and `start` is dialed within ~1 s of `start`."""
    monkeypatch.setenv("DIALER_DATABASE__URL", db_url)
    monkeypatch.chdir(tmp_path)
    await start_daemon()
    await run_to_the_end(conn, sim)
    start, end = hours_around_now()
    numbers = [madrid_number(500 + i) for i in range(3)]
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("phone_number,first_name\n" + "".join(f"{n},Ana\n" for n in numbers))

    def dialer(*argv: str) -> None:
        assert cli.main(list(argv)) == 0

    await asyncio.to_thread(
        dialer, "campaign", "create", "hours", "--hours", f"{start:%H:%M}-{end:%H:%M}", "--timezone", ZONE,
        "--caller-id", "+34910000000",
    )
    cid = uuid.UUID(str(await conn.fetchval("SELECT id FROM campaigns WHERE name = 'hours'")))
    await asyncio.to_thread(dialer, "campaign", "add-contacts", str(cid), "--csv", str(csv_file))
    await asyncio.to_thread(dialer, "campaign", "start", str(cid))
    since = time.monotonic()
    latency = await first_dial_after(sim, numbers, since)
    assert latency < FIRST_DIAL_WITHIN, f"first dial after {latency:.2f} s"


@contextlib.asynccontextmanager
async def housekeeping_elsewhere(db_url: str) -> AsyncIterator[None]:
    """Hold the housekeeping lock, as another instance busy housekeeping would: this
    daemon's passes skip activation meanwhile and still look at the campaigns."""
    other = await asyncpg.connect(db_url)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", HOUSEKEEPING_LOCK)
        yield
    finally:
        await other.close()


async def test_campaign_activated_after_an_empty_look_dials_within_a_second(
    db_url: str, conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """The scheduler looks at an active campaign before any of its calls exist (here:
    another instance holds housekeeping); once they are scheduled, with no further
    NOTIFY, the first dial still comes within ~1 s. (It waited for a minute: the empty
    zone set was trusted.)"""
    await start_daemon()
    numbers = [madrid_number(300 + i) for i in range(2)]
    async with housekeeping_elsewhere(db_url):
        cid = await make_campaign(conn, status="active", **hour_fields())
        await add_contacts(conn, cid, numbers[:1], timezone=ZONE)
        await add_contacts(conn, cid, numbers[1:])
        await asyncio.sleep(0.5)  # passes that see the campaign with nothing scheduled
        assert sim.simulator.calls == []

    async def scheduled() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM calls WHERE campaign_id = $1", cid) == 2)

    await wait_for(scheduled, 5, "activation once housekeeping is free", interval=0.01)
    latency = await first_dial_after(sim, numbers, time.monotonic())
    assert latency < FIRST_DIAL_WITHIN, f"first dial {latency:.2f} s after activation"


async def test_contacts_added_to_a_running_campaign_outside_hours_elsewhere_dial_at_once(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """A running campaign whose only contact is outside hours (its zone is closed) is
    skipped by the scheduler; contacts added in a zone that is open are dialed within
    ~1 s all the same."""
    await start_daemon()
    cid = await make_campaign(conn, status="active", **hour_fields())
    await add_contacts(conn, cid, ["+81312345678"], timezone=CLOSED_ZONE)

    async def scheduled() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM calls WHERE campaign_id = $1", cid) == 1)

    await wait_for(scheduled, 10, "activation of the closed-zone contact")
    await asyncio.sleep(0.5)  # a few passes that find every zone closed
    for round_ in range(3):
        numbers = [madrid_number(700 + 10 * round_ + i) for i in range(2)]
        await add_contacts(conn, cid, numbers[:1], timezone=ZONE)
        await add_contacts(conn, cid, numbers[1:])
        since = time.monotonic()
        latency = await first_dial_after(sim, numbers, since)
        assert latency < FIRST_DIAL_WITHIN, f"round {round_}: first dial after {latency:.2f} s"
    assert_never_dialed(sim.simulator, ["+81312345678"])


async def test_contacts_activated_after_a_closed_look_dial_within_a_second(
    db_url: str, conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """A running campaign whose scheduled calls are all in a closed zone; contacts in
    an open zone are added, and activated only after the scheduler looked again (here:
    another instance holds housekeeping meanwhile). They are dialed within ~1 s of
    activation, not when a cached zone set expires."""
    await start_daemon()
    cid = await make_campaign(conn, status="active", **hour_fields())
    await add_contacts(conn, cid, ["+81312345678"], timezone=CLOSED_ZONE)

    async def activated(count: int) -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM calls WHERE campaign_id = $1", cid) == count)

    await wait_for(lambda: activated(1), 10, "activation of the closed-zone contact")
    numbers = [madrid_number(800 + i) for i in range(2)]
    async with housekeeping_elsewhere(db_url):
        await add_contacts(conn, cid, numbers[:1], timezone=ZONE)
        await add_contacts(conn, cid, numbers[1:])
        await asyncio.sleep(0.5)  # passes that see only the closed zone
    await wait_for(lambda: activated(3), 5, "activation once housekeeping is free", interval=0.01)
    latency = await first_dial_after(sim, numbers, time.monotonic())
    assert latency < FIRST_DIAL_WITHIN, f"first dial {latency:.2f} s after activation"
    assert_never_dialed(sim.simulator, ["+81312345678"])
