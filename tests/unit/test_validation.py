"""Campaign validation as a pure function: every reason a campaign cannot be dialed,
without PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, time, timedelta
from typing import Any

import pytest

from dialer.errors import TemplateError
from dialer.models import Campaign, CampaignStatus
from dialer.validation import campaign_problem

NOW = datetime(2026, 11, 25, 12, 0)
ZONES = frozenset({"UTC", "Europe/Madrid", "America/New_York"})


def _template(text: str) -> None:
    if "{{bogus}}" in text:
        raise TemplateError("unknown placeholder '{{bogus}}'")


def _campaign(**fields: Any) -> Campaign:
    base = Campaign(
        id=uuid.uuid4(),
        name="flu shots",
        status=CampaignStatus.ACTIVE,
        script_template="Hello {{first_name}}",
        caller_id="+34910000000",
        timezone="Europe/Madrid",
        schedule_start=None,
        schedule_end=None,
        calling_hours_start=time(9),
        calling_hours_end=time(21),
        calling_days=[1, 2, 3, 4, 5],
        max_retries=2,
        retry_delay_minutes=60,
        max_concurrent_calls=None,
        machine_detection=False,
        machine_is_failure=False,
        record_calls=False,
        ring_timeout_seconds=30,
        time_limit_seconds=600,
        last_error=None,
    )
    return dataclasses.replace(base, **fields)


def _problem(c: Campaign, *, default_from_number: str = "") -> str | None:
    return campaign_problem(
        c, NOW, known_zones=ZONES, validate_template=_template, default_from_number=default_from_number
    )


def test_a_well_formed_campaign_has_no_problem() -> None:
    """Valid template, E.164 caller id, known zone, a real window: None."""
    assert _problem(_campaign()) is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"schedule_end": NOW - timedelta(hours=1)}, "schedule_end 2026-11-25 11:00 UTC is in the past"),
        ({"script_template": "Hi {{bogus}}"}, "script_template: unknown placeholder '{{bogus}}'"),
        ({"caller_id": None}, "no caller id: set campaigns.caller_id or twilio.from_number"),
        ({"caller_id": "+34 910 000 000"}, "caller_id '+34 910 000 000' is not in E.164 form"),
        ({"caller_id": "+3412"}, "caller_id: '+3412' is not"),
        ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not a known IANA zone"),
        (
            {"calling_hours_start": time(9), "calling_hours_end": time(9)},
            "calling_hours_start equals calling_hours_end: the window is empty",
        ),
    ],
)
def test_each_problem_is_named(fields: dict[str, Any], expected: str) -> None:
    """Each way a campaign cannot run gives a reason naming the field."""
    problem = _problem(_campaign(**fields))
    assert problem is not None
    assert problem.startswith(expected)


def test_the_default_caller_id_stands_in() -> None:
    """No caller id of its own is fine when twilio.from_number is set."""
    assert _problem(_campaign(caller_id=None), default_from_number="+34910000000") is None


def test_open_ended_settings_are_valid() -> None:
    """No zone, no hours, no window, no script: nothing to object to (defaults apply)."""
    c = _campaign(timezone=None, calling_hours_start=None, calling_hours_end=None, script_template=None)
    assert _problem(c) is None


def test_a_future_end_and_a_past_start_are_valid() -> None:
    """Only an end already past is a problem; a window around now is not."""
    c = _campaign(schedule_start=NOW - timedelta(days=1), schedule_end=NOW + timedelta(days=1))
    assert _problem(c) is None


def test_the_first_problem_wins() -> None:
    """Several problems: the schedule comes first, then the script, then the caller id."""
    c = _campaign(schedule_end=NOW - timedelta(days=1), script_template="{{bogus}}", caller_id=None)
    assert (_problem(c) or "").startswith("schedule_end")
    c = _campaign(script_template="{{bogus}}", caller_id=None)
    assert (_problem(c) or "").startswith("script_template")
