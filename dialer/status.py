"""Why nothing is being dialed: one pure function over a snapshot of a campaign, so
every view that explains a quiet campaign (`campaign status`, its `--watch` lines,
the console's board and campaign page) says the same thing in the same words.

The snapshot is read by the store (`CampaignStore.dialing`, the console's queries).
Whether a due call may be dialed right now comes from the database's own
`dialer_may_call()` — calling hours and the closed days, the claim's own test — and
whether today is a holiday or blackout day in the campaign's zone, and the next day
that is not, from `dialer_closed_day()` and `dialer_next_open_day()` (sql/0012); so
the explanation and the dialing cannot disagree. Only the *next* opening is computed
here, for the message.

Extending it (a rate cap, another kind of closed day) is an addition in this module:
a field on `DialingSnapshot` carrying what the store read, and either a check in
`CHECKS` (a reason that holds the whole campaign, as `_closed_today` does for a
holiday) or a line in `closed_day` (a reason that closes a whole local date: it then
also moves the next window past that date).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

FINAL_STATUSES = frozenset({"completed", "cancelled"})


@dataclass(frozen=True)
class DialingSnapshot:
    """What decides whether a campaign can dial now. Times are naive UTC.

    `due_now`/`due_dialable`/`due_zone` describe the scheduled calls already due:
    whether there are any, whether any of them is inside its contact's calling hours
    now, and the zone of the earliest (the one a held campaign waits for). None where
    a view did not read them (the console's board): the campaign's own zone decides."""

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
    due_now: bool | None = None
    due_dialable: bool | None = None
    due_zone: str | None = None
    # Why today (the zone's local date) is closed — "holiday: Inmaculada Concepción
    # (ES)", "blackout: clinic closed" — or None; and the next local date that is a
    # calling day and not closed (None: none within a year, or not read).
    closed_day: str | None = None
    next_open_day: date | None = None


Check = Callable[[DialingSnapshot], str | None]


def _status(s: DialingSnapshot) -> str | None:
    if s.status == "draft":
        return "draft: not started"
    if s.status == "paused":
        return "paused"
    if s.status in FINAL_STATUSES:
        return f"{s.status}: nothing left to dial"
    return None


def _last_error(s: DialingSnapshot) -> str | None:
    return f"last_error: {s.last_error}" if s.last_error else None


def _daemon(s: DialingSnapshot) -> str | None:
    return "no daemon has a fresh heartbeat" if s.live_instances == 0 else None


def _contacts(s: DialingSnapshot) -> str | None:
    return "no contacts in the campaign" if s.contacts == 0 else None


def _schedule(s: DialingSnapshot) -> str | None:
    if s.schedule_start is not None and s.now < s.schedule_start:
        return f"schedule starts {_at(s.schedule_start)} UTC (in {duration(s.schedule_start - s.now)})"
    if s.schedule_end is not None and s.now >= s.schedule_end:
        return f"schedule ended {_at(s.schedule_end)} UTC"
    return None


def _closed_today(s: DialingSnapshot) -> str | None:
    if s.closed_day and not s.due_dialable:
        return closed_day_reason(s.closed_day, s.next_open_day, s.zone)
    return None


def _calls(s: DialingSnapshot) -> str | None:
    if s.due_dialable:
        return None  # a due call is inside its calling hours: the claim takes it now
    if s.due_now:
        # Calls are due, and every one of them is outside its contact's hours or days.
        return _outside_hours(s, s.due_zone or s.zone)
    if s.due_now is None and not s.in_calling_hours:
        return _outside_hours(s, s.zone)
    if s.live_calls or s.open_contacts == 0:
        return None
    if s.next_due_at is not None and s.next_due_at > s.now:
        return f"next retry due {_at(s.next_due_at)} UTC (in {duration(s.next_due_at - s.now)})"
    return None


# In the order an operator would fix them; the first that applies is the reason.
CHECKS: tuple[Check, ...] = (_status, _last_error, _daemon, _contacts, _schedule, _closed_today, _calls)


def idle_reason(s: DialingSnapshot) -> str | None:
    """One line saying why the campaign is not dialing, or None when it is (or will
    the moment a call is due). The first reason that applies wins."""
    for check in CHECKS:
        reason = check(s)
        if reason is not None:
            return reason
    return None


def closed_day_reason(closed_day: str, next_open_day: date | None, zone: str) -> str:
    """Today is a holiday or blackout day: why, and the next working day —
    "holiday: Inmaculada Concepción (ES); next working day Wed 2026-12-09 (Europe/Madrid)"."""
    if next_open_day is None:
        return f"{closed_day}; no working day within a year ({zone})"
    return f"{closed_day}; next working day {next_open_day:%a %Y-%m-%d} ({zone})"


def closed_day(s: DialingSnapshot, day: date, today: date) -> str | None:
    """Why no call of this campaign may be made at all on local date `day` (seen from
    `today`), or None. The days between today and `next_open_day` are holidays or
    blackout days (that is what made it the next one)."""
    if s.days and day.isoweekday() not in s.days:
        return "outside calling days"
    if s.next_open_day is not None and today < day < s.next_open_day:
        return "holiday or blackout day"
    return None


def _outside_hours(s: DialingSnapshot, zone_name: str) -> str:
    zone = zoneinfo.ZoneInfo(zone_name)
    local = s.now.replace(tzinfo=UTC).astimezone(zone)
    today = local.date()
    # Past a run of holidays the next window may be weeks away.
    horizon = 8 + max(0, (s.next_open_day - today).days if s.next_open_day else 0)
    opening = next_window(
        local, s.hours_start, lambda day: closed_day(s, day, today) is None, horizon_days=horizon
    )
    wait = closed_day(s, today, today) or "waiting for calling hours"
    if opening is None:
        return f"{wait} ({zone_name})"
    if opening.date() == today:
        label = f"{opening:%H:%M}"
    elif opening.date() - today < timedelta(days=7):
        label = f"{opening:%a %H:%M}"
    else:  # past a run of holidays: a weekday alone would be ambiguous
        label = f"{opening:%a %Y-%m-%d %H:%M}"
    # Same-zone aware datetimes subtract as wall clocks; across a DST change only UTC is right.
    wait_for = opening.astimezone(UTC) - local.astimezone(UTC)
    return f"{wait} (next window {label} {zone_name}, in {duration(wait_for)})"


def next_window(
    local: datetime,
    hours_start: time | None,
    days: Sequence[int] | Callable[[date], bool] | None,
    *,
    horizon_days: int = 8,
) -> datetime | None:
    """The next moment after `local` (an aware local time) when a calling window
    opens: `hours_start` (midnight when there are no hours) on a date that is open —
    one of the ISO weekdays `days`, or a date for which `days(date)` is true."""
    start = hours_start or time(0, 0)
    is_open: Callable[[date], bool]
    if callable(days):
        is_open = days
    else:
        allowed = days
        is_open = lambda day: not allowed or day.isoweekday() in allowed  # noqa: E731
    for offset in range(horizon_days):
        day = local.date() + timedelta(days=offset)
        if not is_open(day):
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
