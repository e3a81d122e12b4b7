"""The calendar (docs/campaigns.md#calendar, docs/invariants.md#9): no call on a public
holiday of the campaign's calendar or on a blackout day, judged on the contact's local
date, by the claim, the dial gate and the scheduler's pre-check alike — with an
injected clock, on a real database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from typing import Any

import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from dialer.errors import TemplateError
from dialer.service import Daemon
from dialer.status import idle_reason
from dialer.store.calendars import DAYS_AHEAD, DAYS_BEHIND
from dialer.store.claims import DueCounts
from dialer.store.console import ConsoleStore
from dialer.store.lifecycle import LifecycleStore
from tests.factories import FakeClock, add_contacts, madrid_number, make_campaign
from tests.harness import daemon_settings, wait_for

MADRID_HOLIDAY = datetime(2026, 12, 8, 10, 0)  # Tuesday 8 December, 11:00 in Madrid
NEW_YORK, NEW_YORK_TOO = "+12125551234", "+12125551235"  # resolve to America/New_York
# 02:00 UTC on Friday 27 November 2026 is 21:00 on Thursday 26 November (Thanksgiving) in New York.
AFTER_THANKSGIVING_UTC = datetime(2026, 11, 27, 2, 0)
SPAIN_HOURS: dict[str, Any] = {
    "calling_hours_start": time(9), "calling_hours_end": time(21), "calling_days": [1, 2, 3, 4, 5],
    "timezone": "Europe/Madrid",
}


def _template_ok(template: str) -> None:
    if "{{bogus}}" in template:
        raise TemplateError("unknown placeholder {{bogus}}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MADRID_HOLIDAY)


@pytest.fixture
async def store(pool: asyncpg.Pool, clock: FakeClock) -> LifecycleStore:
    s = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=_template_ok, clock=clock)
    await s.register_instance()
    return s


async def _claim_all(store: LifecycleStore) -> list[Any]:
    out = []
    for campaign in await store.dialable_campaigns():
        out += await store.claim(campaign, 100)
    return out


async def _claimed_numbers(store: LifecycleStore) -> list[str]:
    return sorted(c.contact.phone_number for c in await _claim_all(store))


async def test_spanish_holiday_holds_madrid_and_the_next_day_dials(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """ES: nothing is claimed on 2026-12-08 (Inmaculada Concepción) at 11:00 in Madrid,
    while the same campaign without a calendar is; on 2026-12-09 it is claimed. The
    holiday is a row anyone can SELECT."""
    es = await make_campaign(conn, status="active", holiday_calendar="ES", **SPAIN_HOURS)
    plain = await make_campaign(conn, status="active", **SPAIN_HOURS)
    await add_contacts(conn, es, [madrid_number(1)])
    await add_contacts(conn, plain, [madrid_number(2)])
    assert await store.housekeep()
    assert await _claimed_numbers(store) == [madrid_number(2)]  # only the holiday rule decided
    assert await conn.fetchval(
        "SELECT name FROM holiday_dates WHERE calendar = 'ES' AND day = '2026-12-08'"
    ) == "Inmaculada Concepción"
    clock.now = datetime(2026, 12, 9, 10, 0)
    assert await _claimed_numbers(store) == [madrid_number(1)]


async def test_thanksgiving_holds_new_york_on_its_local_date(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """US: at 02:00 UTC on 27 November (the UTC date is no holiday) a New York contact
    is still on Thanksgiving, 21:00 on the 26th, inside its 08:00-23:00 hours: held,
    while the same contact of a campaign without a calendar is called. Once New York's
    date is the 27th it is called."""
    clock.now = AFTER_THANKSGIVING_UTC
    hours: dict[str, Any] = {"calling_hours_start": time(8), "calling_hours_end": time(23), "timezone": "UTC"}
    us = await make_campaign(conn, status="active", holiday_calendar="US", **hours)
    plain = await make_campaign(conn, status="active", **hours)
    await add_contacts(conn, us, [NEW_YORK])
    await add_contacts(conn, plain, [NEW_YORK_TOO])
    assert await store.housekeep()
    zones = await conn.fetch("SELECT DISTINCT resolved_timezone AS zone FROM contacts")
    assert [z["zone"] for z in zones] == ["America/New_York"]
    claimed = await _claim_all(store)
    assert [c.campaign_id for c in claimed] == [plain]
    # The contact's local date, not the campaign's zone (UTC) nor the UTC date, decided.
    assert await conn.fetchval(
        "SELECT dialer_closed_day((timezone('America/New_York', timezone('UTC', $1::timestamp)))::date, $2, 'US')",
        clock.now, us,
    ) == "holiday: Thanksgiving Day (US)"
    clock.now = datetime(2026, 11, 27, 14, 0)  # 09:00 on the 27th in New York
    assert [c.campaign_id for c in await _claim_all(store)] == [us]


async def test_blackout_for_one_campaign_blocks_only_it_and_null_blocks_all(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """A blackout row with a campaign_id holds that campaign only; one with a null
    campaign_id holds every campaign; removing them reopens both."""
    clock.now = datetime(2026, 11, 25, 12, 0)
    a = await make_campaign(conn, status="active", name="a")
    b = await make_campaign(conn, status="active", name="b")
    await add_contacts(conn, a, [madrid_number(1)])
    await add_contacts(conn, b, [madrid_number(2)])
    assert await store.housekeep()
    await conn.execute("INSERT INTO blackout_dates (campaign_id, day, reason) VALUES ($1, '2026-11-25', 'clinic closed')", a)
    claimed = await _claim_all(store)
    assert [c.campaign_id for c in claimed] == [b]
    await store.release_claim(claimed[0].id)
    await conn.execute("INSERT INTO blackout_dates (day, reason) VALUES ('2026-11-25', 'strike')")
    assert await _claim_all(store) == []
    await conn.execute("DELETE FROM blackout_dates")
    assert {c.campaign_id for c in await _claim_all(store)} == {a, b}


async def test_blackout_is_judged_on_the_contacts_local_date(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """At 23:30 UTC on the 25th it is already the 26th in Madrid: a blackout on the
    26th holds the Madrid contact, not a London one (still the 25th)."""
    clock.now = datetime(2026, 11, 25, 23, 30)
    cid = await make_campaign(conn, status="active")
    await add_contacts(conn, cid, [madrid_number(1), "+441134960000"])
    assert await store.housekeep()
    await conn.execute("INSERT INTO blackout_dates (day, reason) VALUES ('2026-11-26', 'local festivity')")
    assert await _claimed_numbers(store) == ["+441134960000"]


async def test_dial_gate_refuses_a_claim_whose_local_date_became_closed(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """A call claimed at 23:59 on 7 December in Madrid is refused by the gate at
    00:01 on the 8th (a holiday); one claimed on an open day is refused once a
    blackout for that day appears. Both go back to scheduled, nothing dialed."""
    clock.now = datetime(2026, 12, 7, 22, 59)
    es = await make_campaign(conn, status="active", holiday_calendar="ES", timezone="Europe/Madrid")
    await add_contacts(conn, es, [madrid_number(1)])
    assert await store.housekeep()
    (call,) = await _claim_all(store)
    clock.now = datetime(2026, 12, 7, 23, 1)
    assert not await store.begin_dial(call.id)
    await store.release_claim(call.id)
    assert await conn.fetchval("SELECT status::text FROM calls WHERE id = $1", call.id) == "scheduled"

    clock.now = datetime(2026, 12, 9, 10, 0)
    (call,) = await _claim_all(store)
    await conn.execute("INSERT INTO blackout_dates (campaign_id, day) VALUES ($1, '2026-12-09')", es)
    assert not await store.begin_dial(call.id)
    await conn.execute("DELETE FROM blackout_dates")
    assert await store.begin_dial(call.id)
    assert await conn.fetchval("SELECT dialed_at FROM calls WHERE id = $1", call.id) == clock.now


@pytest.mark.parametrize(
    ("code", "words"),
    [("XX", "'XX' is not a known calendar"), ("ES-ZZ", "ES has no subdivision 'ZZ'"), ("es", "'es'")],
)
async def test_unknown_calendar_is_a_last_error_naming_it(conn: asyncpg.Connection, store: LifecycleStore, code: str, words: str) -> None:
    """A holiday_calendar the holidays package does not know stops the campaign with a
    last_error naming the code; a known one clears it, and its holidays then hold."""
    cid = await make_campaign(conn, status="active", holiday_calendar=code)
    await add_contacts(conn, cid, [madrid_number(1)])
    assert await store.housekeep()
    assert words in await conn.fetchval("SELECT last_error FROM campaigns WHERE id = $1", cid)
    assert await store.dialable_campaigns() == []
    await conn.execute("UPDATE campaigns SET holiday_calendar = 'ES-MD' WHERE id = $1", cid)
    assert await store.housekeep()
    assert await conn.fetchval("SELECT last_error FROM campaigns WHERE id = $1", cid) is None
    assert await conn.fetchval("SELECT count(*) FROM holiday_calendars WHERE calendar = 'ES-MD'") == 1
    assert await _claim_all(store) == []  # the clock is on 8 December: a holiday in Madrid too


async def test_a_calendar_not_loaded_holds_its_campaign_until_housekeeping_loads_it(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """Fail closed: without its materialised window a calendar's campaign is not
    claimed (the day may be a holiday); the next housekeeping pass loads it again."""
    clock.now = datetime(2026, 12, 9, 10, 0)
    cid = await make_campaign(conn, status="active", holiday_calendar="ES")
    await add_contacts(conn, cid, [madrid_number(1)])
    assert await store.housekeep()
    await conn.execute("DELETE FROM holiday_calendars")
    assert await conn.fetchval("SELECT count(*) FROM holiday_dates") == 0  # cascaded
    assert await _claim_all(store) == []
    assert await conn.fetchval(
        "SELECT dialer_closed_day('2026-12-09', $1, 'ES')", cid
    ) == "holiday calendar ES not loaded for 2026-12-09"
    assert await store.housekeep()
    assert len(await _claim_all(store)) == 1


async def test_calendars_are_refreshed_daily_over_a_rolling_window(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """The window runs from a few days back to DAYS_AHEAD ahead of the clock's date; a
    pass within the day leaves it, a pass two days later moves it. A draft campaign's
    calendar is loaded too (its status can say the next working day)."""
    await make_campaign(conn, holiday_calendar="PT")
    assert await store.housekeep()
    row = await conn.fetchrow("SELECT first_day, last_day, refreshed_at, source FROM holiday_calendars")
    assert row is not None
    today = clock.now.date()
    assert (row["first_day"], row["last_day"]) == (today - timedelta(days=DAYS_BEHIND), today + timedelta(days=DAYS_AHEAD))
    assert row["source"].startswith("holidays ")
    assert await conn.fetchval("SELECT count(*) FROM holiday_dates WHERE calendar = 'PT'") > 10
    clock.now += timedelta(hours=3)
    assert await store.housekeep()
    assert await conn.fetchval("SELECT refreshed_at FROM holiday_calendars") == row["refreshed_at"]
    clock.now += timedelta(days=2)
    assert await store.housekeep()
    moved = await conn.fetchrow("SELECT first_day, last_day, refreshed_at FROM holiday_calendars")
    assert moved is not None
    assert moved["last_day"] == clock.now.date() + timedelta(days=DAYS_AHEAD)
    assert moved["refreshed_at"] == clock.now
    assert await conn.fetchval(
        "SELECT count(*) FROM holiday_dates WHERE calendar = 'PT' AND day = '2026-12-25'"
    ) == 1  # Christmas, replaced in place, never duplicated


async def test_zone_precheck_knows_holidays_and_blackouts(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """any_zone_open (the scheduler's pre-check) answers like the claim: closed on a
    holiday of the calendar and on a blackout day, open otherwise."""
    cid = await make_campaign(conn, status="active", holiday_calendar="ES", **SPAIN_HOURS)
    await add_contacts(conn, cid, [madrid_number(1), NEW_YORK])
    assert await store.housekeep()
    (campaign,) = await store.dialable_campaigns()
    zones = await store.campaign_zones(campaign)
    assert not await store.any_zone_open(campaign, zones)  # 8 December in both zones' dates
    clock.now = datetime(2026, 12, 9, 15, 0)  # 16:00 Madrid, 10:00 New York
    assert await store.any_zone_open(campaign, zones)
    await conn.execute("INSERT INTO blackout_dates (day) VALUES ('2026-12-09')")
    (campaign,) = await store.dialable_campaigns()
    assert campaign.blackout_near
    assert not await store.any_zone_open(campaign, zones)
    assert await _claim_all(store) == []


# ---------------------------------------------------------------- the daemon, end to end


@pytest.fixture
async def clocked_daemon(db_url: str, sim: RunningSimulator) -> AsyncIterator[tuple[Daemon, FakeClock]]:
    """A real daemon whose clock the test sets (tick 0.05 s)."""
    clock = FakeClock(MADRID_HOLIDAY)
    daemon = Daemon(daemon_settings(db_url, sim.url, tick_seconds=0.05), db_url=db_url, clock=clock)
    await daemon.start()
    yield daemon, clock
    await daemon.stop(drain_seconds=2)


async def _passes(daemon: Daemon, n: int) -> None:
    start = daemon.scheduler.passes

    async def enough() -> bool:
        return daemon.scheduler.passes >= start + n

    await wait_for(enough, 10, f"{n} scheduler passes", interval=0.02)


async def test_daemon_dials_nothing_on_a_holiday_and_claims_nothing_either(
    conn: asyncpg.Connection, sim: RunningSimulator, clocked_daemon: tuple[Daemon, FakeClock]
) -> None:
    """A running daemon on 8 December: an ES campaign in Madrid is not dialed and,
    through the zone pre-check, costs no claim at all; on the 9th it is dialed. A
    campaign without hours whose blackout is tomorrow is not held back today."""
    daemon, clock = clocked_daemon
    claims: list[uuid.UUID] = []
    real_claim = daemon.store.claim

    async def counting_claim(campaign: Any, limit: int) -> Any:
        claims.append(campaign.id)
        return await real_claim(campaign, limit)

    daemon.store.claim = counting_claim  # type: ignore[method-assign]
    es = await make_campaign(conn, status="active", holiday_calendar="ES", **SPAIN_HOURS)
    await add_contacts(conn, es, [madrid_number(1), madrid_number(2)])
    other = await make_campaign(conn, status="active", name="open today")
    await add_contacts(conn, other, [madrid_number(3)])
    await conn.execute("INSERT INTO blackout_dates (campaign_id, day) VALUES ($1, '2026-12-09')", other)

    async def scheduled() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM calls WHERE campaign_id = $1", es) == 2)

    await wait_for(scheduled, 10, "activation")
    await wait_for(lambda: _dialed(sim, madrid_number(3)), 10, "the open campaign's dial")
    # Before its calls existed the campaign had no zones, and an empty zone set never
    # holds work back (the claim decides): count from here.
    await _passes(daemon, 3)
    claims.clear()
    await _passes(daemon, 10)
    assert es not in claims
    assert sim.simulator.dials_to(madrid_number(1)) == sim.simulator.dials_to(madrid_number(2)) == 0
    clock.now = datetime(2026, 12, 9, 10, 0)
    daemon.scheduler.wake()
    await wait_for(lambda: _dialed(sim, madrid_number(1), madrid_number(2)), 10, "dials on 9 December")


async def _dialed(sim: RunningSimulator, *numbers: str) -> bool:
    await asyncio.sleep(0)
    return all(sim.simulator.dials_to(n) > 0 for n in numbers)


async def test_next_open_day_skips_weekends_holidays_and_blackouts(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """dialer_next_open_day: after Monday 7 December 2026 with Monday-Friday and ES,
    the 8th (holiday) and a blackout on the 9th are skipped: the 10th."""
    cid = await make_campaign(conn, holiday_calendar="ES")
    assert await store.housekeep()
    await conn.execute("INSERT INTO blackout_dates (campaign_id, day) VALUES ($1, '2026-12-09')", cid)
    nxt = await conn.fetchval(
        "SELECT dialer_next_open_day('2026-12-07', $1, 'ES', '{1,2,3,4,5}')", cid
    )
    assert nxt == date(2026, 12, 10)
    assert await conn.fetchval(
        "SELECT dialer_next_open_day('2026-12-10', $1, 'ES', '{1,2,3,4,5}')", cid
    ) == date(2026, 12, 11)
    assert await conn.fetchval(
        "SELECT dialer_next_open_day('2026-12-11', $1, 'ES', '{1,2,3,4,5}')", cid
    ) == date(2026, 12, 14)


# ---------------------------------------------------------------- campaign status


async def test_status_names_todays_holiday_or_blackout_and_the_next_working_day(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    """The one status explanation (read by the console's store, on the database's own
    clock) says "holiday: … (ES)" or "blackout: …" and the next working day, from the
    claim's own SQL; on the board and on the campaign's page alike."""
    today = await conn.fetchval("SELECT (timezone('Europe/Madrid', now()))::date")
    await conn.execute(
        "INSERT INTO holiday_calendars (calendar, first_day, last_day, source) VALUES ('ES', $1::date - 2, $1::date + 400, 'test')",
        today,
    )
    await conn.execute("INSERT INTO holiday_dates VALUES ('ES', $1, 'Inmaculada Concepción')", today)
    await conn.execute("INSERT INTO dialer_instances (id, hostname, pid) VALUES ($1, 'h', 1)", uuid.uuid4())
    cid = await make_campaign(conn, status="active", holiday_calendar="ES", timezone="Europe/Madrid")
    await add_contacts(conn, cid, [madrid_number(1)])
    console = ConsoleStore(pool, default_timezone="UTC", instance_timeout_seconds=30.0)

    async def reasons() -> tuple[str | None, str | None]:
        (row,) = (await console.board()).rows
        page = await console.campaign_page(cid)
        assert page is not None
        return idle_reason(row.dialing), idle_reason(page.dialing)

    tomorrow = today + timedelta(days=1)
    expected = f"holiday: Inmaculada Concepción (ES); next working day {tomorrow:%a %Y-%m-%d} (Europe/Madrid)"
    assert await reasons() == (expected, expected)
    await conn.execute("DELETE FROM holiday_dates")
    await conn.execute("INSERT INTO blackout_dates (campaign_id, day, reason) VALUES ($1, $2, 'clinic closed')", cid, today)
    await conn.execute("INSERT INTO blackout_dates (day, reason) VALUES ($1, 'strike')", tomorrow)
    after = today + timedelta(days=2)
    expected = f"blackout: clinic closed; next working day {after:%a %Y-%m-%d} (Europe/Madrid)"
    assert await reasons() == (expected, expected)
    await conn.execute("DELETE FROM blackout_dates")
    assert await reasons() == (None, None)


async def test_the_claims_terms_agree_with_dialer_may_call(conn: asyncpg.Connection) -> None:
    """The claim asks the closed dates once per statement (dialer_closed_dates) where
    the gate and the pre-check ask dialer_may_call per contact: across a holiday's
    edges, zones from UTC-11 to UTC+14 and a blackout, they give the same answer."""
    cid = await make_campaign(conn, holiday_calendar="ES")
    await conn.execute(
        "INSERT INTO holiday_calendars (calendar, first_day, last_day, source) VALUES ('ES', '2026-11-01', '2027-01-31', 'test')"
    )
    await conn.execute("INSERT INTO holiday_dates VALUES ('ES', '2026-12-08', 'Inmaculada Concepción')")
    await conn.execute("INSERT INTO blackout_dates (campaign_id, day) VALUES ($1, '2026-12-10')", cid)
    rows = await conn.fetch(
        """
        SELECT t, z,
               dialer_may_call(t, z, '08:00', '22:00', NULL, $1, 'ES') AS gate,
               dialer_in_calling_hours(t, z, '08:00', '22:00', NULL)
               AND timezone(z, timezone('UTC', t))::date <> ALL ((SELECT dialer_closed_dates(t, $1, 'ES'))::date[])
                   AS claim
        FROM generate_series('2026-12-06 00:00'::timestamp, '2026-12-12 00:00', '30 minutes') AS t,
             unnest('{Europe/Madrid,America/New_York,Pacific/Kiritimati,Pacific/Pago_Pago,UTC}'::text[]) AS z
        """,
        cid,
    )
    assert {r["gate"] for r in rows} == {True, False}
    assert [(r["t"], r["z"]) for r in rows if r["gate"] != r["claim"]] == []


async def test_the_due_gauge_counts_calls_held_by_the_calendar_as_held(conn: asyncpg.Connection, store: LifecycleStore, clock: FakeClock) -> None:
    """dialer_due_calls: on 8 December an ES campaign's due Madrid call is held, not
    dialable (a backlog alert stays quiet on a holiday); on the 9th it is dialable."""
    cid = await make_campaign(conn, status="active", holiday_calendar="ES", timezone="Europe/Madrid")
    await add_contacts(conn, cid, [madrid_number(1)])
    assert await store.housekeep()
    assert await store.due_counts([cid]) == DueCounts(dialable=0, held=1)
    clock.now = datetime(2026, 12, 9, 10, 0)
    assert await store.due_counts([cid]) == DueCounts(dialable=1, held=0)
