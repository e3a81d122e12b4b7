"""Whether a campaign can be dialed as configured: a pure function of the campaign
row, the time, and what it is checked against (docs/campaigns.md). Housekeeping
writes its answer to `campaigns.last_error` before every pass, so a fix by the
operator is picked up without a restart."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from dialer import calendars, numbers
from dialer.errors import TemplateError
from dialer.menu import menu_problem
from dialer.models import Campaign

NO_CALLER_ID = "no caller id: set campaigns.caller_id or twilio.from_number"


def campaign_problems(
    c: Campaign,
    now: datetime,
    *,
    known_zones: Collection[str],
    validate_template: Callable[[str], None],
    default_from_number: str,
) -> list[str]:
    """Every reason this campaign cannot be dialed, in the order they are reported
    (empty: it can be). The daemon writes the first to `campaigns.last_error`
    (campaign_problem); the CLI refuses a create, edit or start with them.

    `known_zones` are the IANA zones PostgreSQL knows (calling hours are computed in
    SQL); `validate_template` raises TemplateError for a script that cannot render;
    `default_from_number` stands in for a campaign without its own caller id. A
    `holiday_calendar` must name a calendar of the `holidays` package (static data). A
    menu (docs/campaigns.md#menus) must be a valid object of the documented shape, its
    transfers to E.164 numbers, its `say` texts templates like the script."""
    problems: list[str] = []
    if c.schedule_end is not None and c.schedule_end < now:
        # Only a campaign that never ran gets here (housekeeping completes the others):
        # most likely a mistyped date, so nothing is cancelled; the operator decides.
        end = f"{c.schedule_end:%Y-%m-%d %H:%M}"
        problems.append(f"schedule_end {end} UTC is in the past; nothing was dialed")
    try:
        validate_template(c.script_template or "")
    except TemplateError as exc:
        text = str(exc)  # twiml's own message already names the column
        problems.append(text if text.startswith("script_template:") else f"script_template: {text}")
    if c.menu is not None and (problem := menu_problem(c.menu, validate_template)):
        problems.append(f"menu: {problem}")
    if c.voicemail_template is not None:
        try:
            validate_template(c.voicemail_template)
        except TemplateError as exc:
            problems.append(f"voicemail_template: {str(exc).removeprefix('script_template: ')}")
    if not (c.caller_id or default_from_number):
        problems.append(NO_CALLER_ID)
    if c.caller_id:
        try:
            if numbers.parse(c.caller_id).e164 != c.caller_id:
                problems.append(f"caller_id {c.caller_id!r} is not in E.164 form")
        except numbers.InvalidNumber as exc:
            problems.append(f"caller_id: {exc}")
    if c.timezone and c.timezone not in known_zones:
        problems.append(f"timezone {c.timezone!r} is not a known IANA zone")
    if c.holiday_calendar is not None:
        problem = calendars.calendar_problem(c.holiday_calendar)
        if problem:
            problems.append(problem)
    if (
        c.calling_hours_start is not None
        and c.calling_hours_end is not None
        and c.calling_hours_start == c.calling_hours_end
    ):
        problems.append("calling_hours_start equals calling_hours_end: the window is empty")
    return problems


def campaign_problem(
    c: Campaign,
    now: datetime,
    *,
    known_zones: Collection[str],
    validate_template: Callable[[str], None],
    default_from_number: str,
) -> str | None:
    """Why this campaign cannot be dialed (the first of campaign_problems), or None."""
    problems = campaign_problems(
        c,
        now,
        known_zones=known_zones,
        validate_template=validate_template,
        default_from_number=default_from_number,
    )
    return problems[0] if problems else None
