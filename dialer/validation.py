"""Whether a campaign can be dialed as configured: a pure function of the campaign
row, the time, and what it is checked against (docs/campaigns.md). Housekeeping
writes its answer to `campaigns.last_error` before every pass, so a fix by the
operator is picked up without a restart."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from dialer import calendars, numbers
from dialer.errors import TemplateError
from dialer.models import Campaign


def campaign_problem(
    c: Campaign,
    now: datetime,
    *,
    known_zones: Collection[str],
    validate_template: Callable[[str], None],
    default_from_number: str,
) -> str | None:
    """Why this campaign cannot be dialed, or None.

    `known_zones` are the IANA zones PostgreSQL knows (calling hours are computed in
    SQL); `validate_template` raises TemplateError for a script that cannot render;
    `default_from_number` stands in for a campaign without its own caller id. A
    `holiday_calendar` must name a calendar of the `holidays` package (static data)."""
    if c.schedule_end is not None and c.schedule_end < now:
        # Only a campaign that never ran gets here (housekeeping completes the others):
        # most likely a mistyped date, so nothing is cancelled; the operator decides.
        return f"schedule_end {c.schedule_end:%Y-%m-%d %H:%M} UTC is in the past; nothing was dialed"
    try:
        validate_template(c.script_template or "")
    except TemplateError as exc:
        return f"script_template: {exc}"
    if not (c.caller_id or default_from_number):
        return "no caller id: set campaigns.caller_id or twilio.from_number"
    if c.caller_id:
        try:
            if numbers.parse(c.caller_id).e164 != c.caller_id:
                return f"caller_id {c.caller_id!r} is not in E.164 form"
        except numbers.InvalidNumber as exc:
            return f"caller_id: {exc}"
    if c.timezone and c.timezone not in known_zones:
        return f"timezone {c.timezone!r} is not a known IANA zone"
    if c.holiday_calendar is not None:
        problem = calendars.calendar_problem(c.holiday_calendar)
        if problem:
            return problem
    if (
        c.calling_hours_start is not None
        and c.calling_hours_end is not None
        and c.calling_hours_start == c.calling_hours_end
    ):
        return "calling_hours_start equals calling_hours_end: the window is empty"
    return None
