"""The calendar's cost on the claim (docs/campaigns.md#calendar): what the holiday and
blackout test adds to each due call the claim walks, and to a whole claim.

1. Per row: a filter over N rows of the calling-hours test alone (the baseline: what
   the claim paid before), then calling hours AND the day test as the claim writes it
   (closed dates asked once per statement), with no calendar and with `ES` plus
   blackout rows; and, for scale, the same test as a per-row call of
   `dialer_may_call` (the form the dial gate uses once per dial).
2. Per claim: claiming due calls 100 at a time from a campaign of `--calls` due
   calls, with no calendar (baseline) and with `ES` and blackouts.

    .venv/bin/python -m bench.calendar [--rows 20000] [--calls 20000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import datetime

import asyncpg

from bench._common import Deadline, Result, fresh_database, postgres, quiet, report
from dialer import database
from dialer.config import DatabaseSettings
from dialer.store.lifecycle import LifecycleStore

RUN_BOUND = 240.0  # seconds the whole benchmark may take
NOW = datetime(2026, 12, 9, 15, 0)  # a Wednesday: 16:00 in Madrid, 10:00 in New York
ROUNDS = 5

_AT = "'2026-12-09 15:00'::timestamp + (g % 2) * interval '1 second'"  # per row: no one-time filter
_ZONE = "(CASE WHEN g % 3 = 0 THEN 'America/New_York' ELSE 'Europe/Madrid' END)"
_HOURS = f"dialer_in_calling_hours({_AT}, {_ZONE}, '08:00', '23:00', '{{1,2,3,4,5}}')"
_DAY = (
    f"timezone({_ZONE}, timezone('UTC', {_AT}))::date"
    " <> ALL ((SELECT dialer_closed_dates('2026-12-09 15:00', $1, $2::text))::date[])"
)
FILTERS = {
    "hours only": _HOURS,
    "hours + day, claim form": f"{_HOURS} AND {_DAY}",
    "dialer_may_call per row": (
        f"dialer_may_call({_AT}, {_ZONE}, '08:00', '23:00', '{{1,2,3,4,5}}', $1, $2::text)"
    ),
}


async def setup_calendar(conn: asyncpg.Connection, campaign: uuid.UUID) -> None:
    """ES materialised over two years, and a blackout every fifth day (none today)."""
    await conn.execute(
        "INSERT INTO holiday_calendars (calendar, first_day, last_day, source)"
        " VALUES ('ES', '2026-01-01', '2027-12-31', 'bench')"
    )
    await conn.execute(
        "INSERT INTO holiday_dates SELECT 'ES', d::date, 'holiday' FROM "
        "generate_series('2026-01-01'::date, '2027-12-31', '17 days') d WHERE d::date <> '2026-12-09'"
    )
    await conn.execute(
        "INSERT INTO blackout_dates (campaign_id, day) SELECT $1, d::date FROM "
        "generate_series('2026-01-02'::date, '2027-12-31', '5 days') d WHERE d::date <> '2026-12-09'",
        campaign,
    )
    await conn.execute("ANALYZE")


async def per_row(url: str, rows: int, deadline: Deadline) -> dict[str, float]:
    """Microseconds per row of each filter (median of ROUNDS), no calendar and ES."""
    conn = await database.connect(url)
    try:
        campaign = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('bench') RETURNING id")
        await setup_calendar(conn, campaign)
        out: dict[str, float] = {}
        for calendar in (None, "ES"):
            for name, expr in FILTERS.items():
                if name == "hours only" and calendar:
                    continue
                query = f"SELECT count(*) FROM generate_series(1, {rows}) g WHERE {expr}"
                args = (campaign, calendar) if "$1" in expr else ()
                times = []
                for _ in range(ROUNDS):
                    deadline.check()
                    started = time.perf_counter()
                    assert await conn.fetchval(query, *args) == rows  # every row passes
                    times.append((time.perf_counter() - started) / rows * 1e6)
                label = name if name == "hours only" else f"{name}, {calendar or 'no calendar'}"
                out[label] = statistics.median(times)
        return out
    finally:
        await conn.close()


async def claim_ms(url: str, calls: int, calendar: str | None, deadline: Deadline) -> float:
    """Median milliseconds of one claim of 100 from `calls` due calls."""
    conn = await database.connect(url)
    pool = await database.create_pool(url, DatabaseSettings(pool_min_size=1, pool_max_size=2))
    try:
        campaign = await conn.fetchval(
            "INSERT INTO campaigns (name, status, caller_id, calling_hours_start, calling_hours_end,"
            " calling_days, holiday_calendar) VALUES ('bench', 'active', '+34910000000', '08:00', '23:00',"
            " '{1,2,3,4,5}', $1) RETURNING id",
            calendar,
        )
        if calendar:
            await setup_calendar(conn, campaign)
        await conn.execute(
            "INSERT INTO contacts (phone_number, checked_at, number_valid, resolved_timezone)"
            " SELECT '+3491' || lpad(g::text, 7, '0'), now(), true, 'Europe/Madrid'"
            f" FROM generate_series(1, {calls}) g"
        )
        await conn.execute(
            "INSERT INTO campaign_contacts (campaign_id, contact_id, call_status)"
            " SELECT $1, id, 'scheduled' FROM contacts",
            campaign,
        )
        await conn.execute(
            "INSERT INTO calls (campaign_id, contact_id, scheduled_at)"
            " SELECT $1, id, '2026-01-01' FROM contacts",
            campaign,
        )
        await conn.execute("VACUUM ANALYZE")
        store = LifecycleStore(
            pool, instance_id=uuid.uuid4(), validate_template=lambda _: None, clock=lambda: NOW
        )
        await store.register_instance()
        (dialable,) = await store.dialable_campaigns()
        times = []
        for _ in range(min(calls // 100, 100)):
            deadline.check()
            started = time.perf_counter()
            assert len(await store.claim(dialable, 100)) == 100
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        await pool.close()
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 rows and calls")
    args = parser.parse_args()
    if args.quick:
        args.rows = args.calls = 2_000
    quiet()
    deadline = Deadline(RUN_BOUND, "calendar")
    with postgres() as server:
        async with fresh_database(server) as url:
            figures = await per_row(url, args.rows, deadline)
        base = figures.pop("hours only")
        report(Result("calendar", "per row: hours only", base, "µs"))
        for label, value in figures.items():
            report(Result("calendar", f"per row: {label}", value, "µs", "hours only", base, value / base))
        async with fresh_database(server) as url:
            plain = await claim_ms(url, args.calls, None, deadline)
        async with fresh_database(server) as url:
            with_es = await claim_ms(url, args.calls, "ES", deadline)
        report(Result("calendar", "claim of 100, no calendar", plain, "ms"))
        ratio = with_es / plain
        report(Result("calendar", "claim of 100, ES + blackouts", with_es, "ms", "no calendar", plain, ratio))


if __name__ == "__main__":
    asyncio.run(main())
