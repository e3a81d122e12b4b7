"""Why a campaign is not dialing, for the calendar's reasons (dialer/status.py): a
holiday or blackout day names itself and the next working day; the next calling
window skips days the calendar closes."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from dialer.status import DialingSnapshot, closed_day_reason, idle_reason


def _snap(**changes: object) -> DialingSnapshot:
    base: dict[str, object] = {
        "status": "active",
        "last_error": None,
        "now": datetime(2026, 12, 8, 10, 0),  # Tuesday 8 December, 11:00 in Madrid
        "contacts": 10,
        "open_contacts": 10,
        "live_calls": 0,
        "next_due_at": datetime(2026, 12, 1, 9, 0),
        "live_instances": 1,
        "zone": "Europe/Madrid",
        "in_calling_hours": True,
        "hours_start": time(9),
        "hours_end": time(21),
        "days": [1, 2, 3, 4, 5],
    }
    base.update(changes)
    return DialingSnapshot(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"closed_day": "holiday: Inmaculada Concepción (ES)", "next_open_day": date(2026, 12, 9)},
            "holiday: Inmaculada Concepción (ES); next working day Wed 2026-12-09 (Europe/Madrid)",
        ),
        (
            {"closed_day": "blackout: clinic closed", "next_open_day": date(2026, 12, 14)},
            "blackout: clinic closed; next working day Mon 2026-12-14 (Europe/Madrid)",
        ),
        (
            {"closed_day": "holiday calendar ES not loaded for 2026-12-08", "next_open_day": None},
            "holiday calendar ES not loaded for 2026-12-08; no working day within a year (Europe/Madrid)",
        ),
        # A paused campaign is paused first, whatever the day.
        ({"status": "paused", "closed_day": "blackout: clinic closed"}, "paused"),
        # An open day changes nothing.
        ({"next_open_day": date(2026, 12, 9)}, None),
    ],
)
def test_a_closed_day_names_itself_and_the_next_working_day(changes: dict[str, object], reason: str | None) -> None:
    """A holiday or blackout day is the reason, with the next working day in the zone."""
    assert idle_reason(_snap(**changes)) == reason


def test_the_next_window_skips_a_closed_day() -> None:
    """At 22:00 on Monday 7 December (Madrid) the next window is not Tuesday (a
    holiday) but Wednesday 09:00."""
    snap = _snap(now=datetime(2026, 12, 7, 21, 0), in_calling_hours=False, next_open_day=date(2026, 12, 9))
    assert idle_reason(snap) == "waiting for calling hours (next window Wed 09:00 Europe/Madrid, in 1 d 11 h)"


def test_a_window_beyond_a_week_carries_its_date() -> None:
    """Past a long run of closed days the weekday alone would be ambiguous: the date is given."""
    snap = _snap(now=datetime(2026, 12, 7, 21, 0), in_calling_hours=False, next_open_day=date(2026, 12, 21))
    assert idle_reason(snap) == (
        "waiting for calling hours (next window Mon 2026-12-21 09:00 Europe/Madrid, in 13 d 11 h)"
    )


def test_closed_day_reason_alone() -> None:
    """The small function other views can call with what they read."""
    assert closed_day_reason("blackout: strike", date(2026, 1, 2), "UTC") == (
        "blackout: strike; next working day Fri 2026-01-02 (UTC)"
    )
