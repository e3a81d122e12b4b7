"""dialer.status with the due work read exactly (`campaign status`, the console's
campaign page), and the CLI's renderings of it (dialer.progress)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time

import pytest

from dialer.models import CampaignStatus
from dialer.progress import describe_due, status_line
from dialer.status import DialingSnapshot, idle_reason
from dialer.store.campaigns import CampaignProgress


def _snap(**changes: object) -> DialingSnapshot:
    base: dict[str, object] = {
        "status": "active",
        "last_error": None,
        "now": datetime(2026, 3, 2, 12, 0),  # a Monday, 13:00 in Madrid
        "contacts": 10,
        "open_contacts": 10,
        "live_calls": 0,
        "next_due_at": datetime(2026, 3, 2, 11, 0),
        "live_instances": 1,
        "zone": "Europe/Madrid",
        "in_calling_hours": True,
        "hours_start": time(16, 0),
        "hours_end": time(21, 0),
        "due_now": True,
        "due_dialable": False,
        "due_zone": "America/New_York",
    }
    base.update(changes)
    return DialingSnapshot(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        # Due calls, none inside its contact's hours: the earliest one's zone is waited for,
        # whatever the campaign's own zone says.
        ({}, "waiting for calling hours (next window 16:00 America/New_York, in 9 h 0 min)"),
        ({"due_dialable": True, "in_calling_hours": False}, None),
        ({"due_zone": None}, "waiting for calling hours (next window 16:00 Europe/Madrid, in 3 h 0 min)"),
        # Nothing due: the campaign zone being closed is no reason by itself.
        ({"due_now": False, "in_calling_hours": False, "next_due_at": None}, None),
        (
            {"due_now": False, "next_due_at": datetime(2026, 3, 2, 12, 30)},
            "next retry due 2026-03-02 12:30 UTC (in 30 min)",
        ),
        ({"status": "paused"}, "paused"),
    ],
)
def test_idle_reason_with_due_work(changes: dict[str, object], reason: str | None) -> None:
    """Read due work decides between dialing and waiting, in the zone of the call that waits."""
    assert idle_reason(_snap(**changes)) == reason


def test_held_due_calls_wait_past_the_closed_days() -> None:
    """Due calls held outside their hours wait for the next window past the holidays
    (the days before next_open_day are closed); a dialable due call beats a closed day."""
    snap = _snap(due_zone="Europe/Madrid", now=datetime(2026, 3, 2, 21, 0), next_open_day=date(2026, 3, 4))
    assert idle_reason(snap) == "waiting for calling hours (next window Wed 16:00 Europe/Madrid, in 1 d 18 h)"
    closed = _snap(closed_day="holiday: test day", next_open_day=date(2026, 3, 3))
    assert idle_reason(closed) == "holiday: test day; next working day Tue 2026-03-03 (Europe/Madrid)"
    assert idle_reason(_snap(closed_day="holiday: test day", due_dialable=True)) is None


def test_describe_due_held_is_not_due_now() -> None:
    """An overdue call that is held says why instead of 'due now'."""
    now, due = datetime(2026, 3, 2, 12, 0), datetime(2026, 3, 2, 11, 0)
    assert describe_due(due, now) == "2026-03-02 11:00:00 UTC (due now)"
    assert describe_due(due, now, "paused") == "2026-03-02 11:00:00 UTC (held: paused)"


def test_status_line_is_one_line_with_the_reason() -> None:
    """The --watch line names the campaign, its counts and its state, on one line, escaped."""
    progress = CampaignProgress(
        id=uuid.UUID(int=1),
        name="Clinic\nnext",
        status=CampaignStatus.ACTIVE,
        last_error=None,
        total_calls=3,
        pending_calls=1,
        successful_calls=1,
        failed_calls=1,
        contacts=3,
        dispositions={"completed": 1, "failed": 1, "scheduled": 1},
        now=datetime(2026, 3, 2, 12, 0),
        dialing=_snap(live_calls=0),
    )
    assert status_line(progress) == (
        "Clinic\\nnext 00000000-0000-0000-0000-000000000001 active: 2/3 contacts final, 1 successful, "
        "1 failed, 0 live; waiting for calling hours (next window 16:00 America/New_York, in 9 h 0 min)"
    )
