"""The calendar's rows (docs/campaigns.md#calendar): materialising the holiday
calendars campaigns name into `holiday_dates` (housekeeping, one instance at a time),
and the operator's `blackout_dates`.

Whether a day is closed is decided in SQL, by `dialer_closed_day()` (sql/0012), which
the dial gate and the scheduler's pre-check reach through `dialer_may_call()` and the
claim through `dialer_closed_dates()`; nothing here decides it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

import asyncpg
import structlog

from dialer import calendars
from dialer.database import translate_errors
from dialer.store.base import Conn

log = structlog.get_logger(__name__)

# The window each calendar covers, in days around today's UTC date. Behind: a contact
# west of UTC is still on yesterday's date. Ahead: far enough that `campaign status`
# can name the next working day after any run of holidays, with room to spare.
DAYS_BEHIND = 2
DAYS_AHEAD = 400
REFRESH_AFTER = timedelta(days=1)  # a new release of the data is picked up within a day

# Calendars named by campaigns that are not finished whose window is missing, older
# than a day ($2), or no longer covers [$3, $4] (today - DAYS_BEHIND .. today +
# DAYS_AHEAD - 1: a day's slack, so the window moves once a day, not every pass).
_CALENDARS_DUE: Final = """
    SELECT DISTINCT c.holiday_calendar AS calendar
    FROM campaigns c
    WHERE c.status IN ('draft', 'active', 'paused') AND c.holiday_calendar IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM holiday_calendars hc
                      WHERE hc.calendar = c.holiday_calendar
                        AND hc.refreshed_at > $1::timestamp - $2::interval
                        AND hc.first_day <= $3 AND hc.last_day >= $4)
    ORDER BY 1
"""
_UPSERT_CALENDAR: Final = """
    INSERT INTO holiday_calendars (calendar, first_day, last_day, refreshed_at, source)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (calendar) DO UPDATE
    SET first_day = EXCLUDED.first_day, last_day = EXCLUDED.last_day,
        refreshed_at = EXCLUDED.refreshed_at, source = EXCLUDED.source
"""
_CLEAR_DATES: Final = "DELETE FROM holiday_dates WHERE calendar = $1"
_INSERT_DATES: Final = """
    INSERT INTO holiday_dates (calendar, day, name)
    SELECT $1, d.day, d.name FROM unnest($2::date[], $3::text[]) AS d(day, name)
"""


async def refresh_calendars(conn: Conn, now: datetime) -> list[str]:
    """Materialise every calendar a campaign names whose window is missing or due, in
    the caller's transaction (housekeeping's, under its lock), so a claim sees the old
    dates or the new ones, never none. Returns the calendars refreshed. A code that
    names no calendar is skipped: validation reports it as the campaign's last_error."""
    today = now.date()
    first, last = today - timedelta(days=DAYS_BEHIND), today + timedelta(days=DAYS_AHEAD)
    rows = await conn.fetch(_CALENDARS_DUE, now, REFRESH_AFTER, first, last - timedelta(days=1))
    refreshed = []
    for row in rows:
        code: str = row["calendar"]
        if calendars.calendar_problem(code) is not None:
            continue
        try:
            # Building a calendar takes tens of milliseconds: off the event loop.
            dates = await asyncio.to_thread(calendars.holidays_between, code, first, last)
        except Exception as exc:  # the library failing must not stop housekeeping
            log.error("holiday_calendar_failed", calendar=code, error=str(exc))
            continue
        await conn.execute(_UPSERT_CALENDAR, code, first, last, now, calendars.SOURCE)
        await conn.execute(_CLEAR_DATES, code)
        await conn.execute(_INSERT_DATES, code, [d for d, _ in dates], [n for _, n in dates])
        log.info("holiday_calendar_loaded", calendar=code, holidays=len(dates), first_day=str(first),
                 last_day=str(last))
        refreshed.append(code)
    return refreshed


@dataclass(frozen=True)
class Blackout:
    """One blackout day: for one campaign, or (campaign_id None) for every campaign."""

    id: uuid.UUID
    campaign_id: uuid.UUID | None
    campaign_name: str | None
    day: date
    reason: str | None
    created_at: datetime  # naive UTC


@dataclass(frozen=True)
class BlackoutChange:
    """What `add` did: a new row, or a reason updated on an existing one."""

    added: bool
    blackout: Blackout


class BlackoutStore:
    """`blackout_dates`, through one connection (or pool)."""

    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._conn = conn

    # One row per day and scope (the two partial unique indexes): adding it again
    # keeps the row and takes the new reason, if one is given.
    _ADD_ALL: Final = """
        INSERT INTO blackout_dates (day, reason) VALUES ($1, $2)
        ON CONFLICT (day) WHERE campaign_id IS NULL
        DO UPDATE SET reason = coalesce(EXCLUDED.reason, blackout_dates.reason)
        RETURNING id, (xmax = 0) AS added
    """
    _ADD_ONE: Final = """
        INSERT INTO blackout_dates (campaign_id, day, reason) VALUES ($3, $1, $2)
        ON CONFLICT (campaign_id, day) WHERE campaign_id IS NOT NULL
        DO UPDATE SET reason = coalesce(EXCLUDED.reason, blackout_dates.reason)
        RETURNING id, (xmax = 0) AS added
    """

    @translate_errors
    async def add(self, day: date, *, campaign_id: uuid.UUID | None, reason: str | None) -> BlackoutChange:
        """Close `day` for one campaign, or for every campaign when `campaign_id` is None."""
        if campaign_id is None:
            row = await self._conn.fetchrow(self._ADD_ALL, day, reason)
        else:
            row = await self._conn.fetchrow(self._ADD_ONE, day, reason, campaign_id)
        assert row is not None
        (blackout,) = await self.entries(blackout_id=row["id"])
        return BlackoutChange(added=bool(row["added"]), blackout=blackout)

    _REMOVE: Final = """
        DELETE FROM blackout_dates
        WHERE day = $1 AND campaign_id IS NOT DISTINCT FROM $2
        RETURNING id
    """

    @translate_errors
    async def remove(self, day: date, *, campaign_id: uuid.UUID | None) -> bool:
        """Reopen `day` in that scope (one campaign's, or every campaign's); False when
        there was no such blackout."""
        return await self._conn.fetchval(self._REMOVE, day, campaign_id) is not None

    # $1: only this row; $2: a campaign (its own rows and those for every campaign);
    # $3: from this day on.
    _LIST: Final = """
        SELECT b.id, b.campaign_id, c.name AS campaign_name, b.day, b.reason, b.created_at
        FROM blackout_dates b LEFT JOIN campaigns c ON c.id = b.campaign_id
        WHERE ($1::uuid IS NULL OR b.id = $1)
          AND ($2::uuid IS NULL OR b.campaign_id = $2 OR b.campaign_id IS NULL)
          AND ($3::date IS NULL OR b.day >= $3)
        ORDER BY b.day, b.campaign_id NULLS FIRST
    """

    @translate_errors
    async def entries(
        self,
        *,
        campaign_id: uuid.UUID | None = None,
        since: date | None = None,
        blackout_id: uuid.UUID | None = None,
    ) -> list[Blackout]:
        """Blackout days by date: all, or those that apply to one campaign."""
        rows = await self._conn.fetch(self._LIST, blackout_id, campaign_id, since)
        return [Blackout(**dict(r)) for r in rows]
