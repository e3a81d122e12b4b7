"""Why nothing is being dialed: one pure function over a snapshot of a campaign, so
every view that explains a quiet campaign (the console today; `campaign status`
can use the same) says the same thing in the same words.

The snapshot is read by the store (`dialer/store/console.py`); whether the campaign's
zone is inside its calling hours right now comes from the database's own
`dialer_in_calling_hours()` (the function the claim and the dial gate use), whether
today is a holiday or blackout day there, and the next day that is not, from
`dialer_closed_day()` and `dialer_next_open_day()` (the claim's own test, sql/0012);
only the *next* opening is computed here, for the message. Reasons that need more
data (a per-campaign rate cap) extend `DialingSnapshot` and `idle_reason` here, in
this one place.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

FINAL_STATUSES = frozenset({"completed", "cancelled"})


@dataclass(frozen=True)
class DialingSnapshot:
    """What decides whether a campaign can dial now. Times are naive UTC."""

    status: str
    last_error: str | None
    now: datetime
    contacts: int
    open_contacts: int
    live_calls: int
    next_due_at: datetime | None
    live_instances: int
    zone: str
    in_calling_hours: bool
    hours_start: time | None = None
    hours_end: time | None = None
    days: Sequence[int] | None = None
    schedule_start: datetime | None = None
    schedule_end: datetime | None = None
    # Why today (the zone's local date) is closed — "holiday: Inmaculada Concepción
    # (ES)", "blackout: clinic closed" — or None; and the next local date that is a
    # calling day and not closed (None: none within a year, or not read).
    closed_day: str | None = None
    next_open_day: date | None = None


def idle_reason(s: DialingSnapshot) -> str | None:
    """One line saying why the campaign is not dialing, or None when it is (or will
    the moment a call is due). The first reason that applies wins, in the order an
    operator would fix them."""
    if s.status == "draft":
        return "draft: not started"
    if s.status == "paused":
        return "paused"
    if s.status in FINAL_STATUSES:
        return f"{s.status}: nothing left to dial"
    if s.last_error:
        return f"last_error: {s.last_error}"
    if s.live_instances == 0:
        return "no daemon has a fresh heartbeat"
    if s.contacts == 0:
        return "no contacts in the campaign"
    if s.schedule_start is not None and s.now < s.schedule_start:
        return f"schedule starts {_at(s.schedule_start)} UTC (in {duration(s.schedule_start - s.now)})"
    if s.schedule_end is not None and s.now >= s.schedule_end:
        return f"schedule ended {_at(s.schedule_end)} UTC"
    if s.closed_day:
        return closed_day_reason(s.closed_day, s.next_open_day, s.zone)
    if not s.in_calling_hours:
        return _outside_hours(s)
    if s.live_calls or s.open_contacts == 0:
        return None
    if s.next_due_at is not None and s.next_due_at > s.now:
        return f"next retry due {_at(s.next_due_at)} UTC (in {duration(s.next_due_at - s.now)})"
    return None


def closed_day_reason(closed_day: str, next_open_day: date | None, zone: str) -> str:
    """Today is a holiday or blackout day: why, and the next working day —
    "holiday: Inmaculada Concepción (ES); next working day Wed 2026-12-09 (Europe/Madrid)"."""
    if next_open_day is None:
        return f"{closed_day}; no working day within a year ({zone})"
    return f"{closed_day}; next working day {next_open_day:%a %Y-%m-%d} ({zone})"


def _outside_hours(s: DialingSnapshot) -> str:
    zone = zoneinfo.ZoneInfo(s.zone)
    local = s.now.replace(tzinfo=UTC).astimezone(zone)
    opening = next_window(local, s.hours_start, s.days)
    later = s.next_open_day
    if opening is not None and later is not None and local.date() < opening.date() < later:
        # Today's window has passed and the next calling day is a holiday or blackout.
        opening = datetime.combine(later, s.hours_start or time(0, 0), tzinfo=zone)
    off_day = bool(s.days) and local.isoweekday() not in (s.days or ())
    wait = "outside calling days" if off_day else "waiting for calling hours"
    if opening is None:
        return f"{wait} ({s.zone})"
    if opening.date() == local.date():
        label = f"{opening:%H:%M}"
    elif opening.date() - local.date() < timedelta(days=7):
        label = f"{opening:%a %H:%M}"
    else:  # past a run of holidays: a weekday alone would be ambiguous
        label = f"{opening:%a %Y-%m-%d %H:%M}"
    # Same-zone aware datetimes subtract as wall clocks; across a DST change only UTC is right.
    wait_for = opening.astimezone(UTC) - local.astimezone(UTC)
    return f"{wait} (next window {label} {s.zone}, in {duration(wait_for)})"


def next_window(local: datetime, hours_start: time | None, days: Sequence[int] | None) -> datetime | None:
    """The next moment after `local` (an aware local time) when a calling window
    opens: `hours_start` on an allowed day (midnight when there are no hours)."""
    start = hours_start or time(0, 0)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if days and day.isoweekday() not in days:
            continue
        candidate = datetime.combine(day, start, tzinfo=local.tzinfo)
        if candidate > local:
            return candidate
    return None


def _at(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"


def duration(delta: timedelta) -> str:
    """'3 h 12 min', '45 s', '2 d 4 h' — the two largest units."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
