"""`campaign create --rules ES|US` and `--holiday-calendar`: calling-rule presets that
expand into the ordinary columns (hours, days, holiday calendar, zone), printed so the
operator sees exactly what was set. Options given explicitly win over the preset.
A preset is a starting point, not legal advice (docs/campaigns.md#presets)."""

from __future__ import annotations

import argparse
from datetime import time
from typing import Any

from dialer.calendars import PRESETS, Preset, calendar_problem


def calendar_arg(text: str) -> str:
    problem = calendar_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The preset and calendar options of `campaign create`."""
    p.add_argument(
        "--rules", choices=sorted(PRESETS), metavar="PRESET",
        help="calling-rule preset: ES (09:00-21:00 Mon-Fri, Spain's national holidays) or US "
        "(08:00-21:00 local); explicit options override it. A starting point, not legal advice",
    )
    p.add_argument(
        "--holiday-calendar", type=calendar_arg, metavar="CODE",
        help="no calls on this calendar's public holidays (ES, ES-MD, PT, US, US-CA …)",
    )


def _hours(value: tuple[time, time] | None) -> str:
    return "any time" if value is None else f"{value[0]:%H:%M}-{value[1]:%H:%M}"


def _days(value: list[int] | None) -> str:
    return "every day" if not value else ",".join(str(d) for d in value)


def apply_rules(args: argparse.Namespace) -> list[str]:
    """Fill the options the operator left out from `args.rules`' preset, in place.
    Returns the lines that say what each rule column is now and where it came from
    (empty without a preset)."""
    if not args.rules:
        return []
    preset: Preset = PRESETS[args.rules]
    rows: list[tuple[str, str, Any, Any]] = [
        ("calling hours", "hours", preset.hours, _hours),
        ("calling days", "days", preset.days, _days),
        ("holiday calendar", "holiday_calendar", preset.holiday_calendar, lambda v: v or "none"),
        ("timezone", "timezone", preset.timezone, lambda v: v or "none (the contact's, else the default)"),
    ]
    lines = [f"rules {preset.name}: {preset.summary} (a starting point, not legal advice)"]
    for label, attr, value, show in rows:
        given = getattr(args, attr)
        if given is None:
            setattr(args, attr, value)
            source = f"preset {preset.name}"
        else:
            source = "--" + attr.replace("_", "-")
        lines.append(f"  {label + ':':18}{show(getattr(args, attr))}  ({source})")
    return lines
