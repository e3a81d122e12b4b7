"""Public-holiday calendars and calling-rule presets (docs/campaigns.md#calendar).

A calendar is named the way `campaigns.holiday_calendar` holds it: a country (`ES`,
`PT`, `US`) or a country and one of its subdivisions (`ES-MD`, `US-CA`), as the
`holidays` package knows them. The dates themselves are never written by hand: the
daemon asks that package for a span of days and materialises the answer in
`holiday_dates` (dialer/store/calendars.py), where the claim reads it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, time
from importlib.metadata import version

import holidays

SOURCE = f"holidays {version('holidays')}"  # recorded beside the dates it produced


@functools.cache
def _supported() -> dict[str, frozenset[str]]:
    return {country: frozenset(subdivs) for country, subdivs in holidays.list_supported_countries().items()}


def _split(code: str) -> tuple[str, str | None]:
    country, dash, subdivision = code.partition("-")
    return country, subdivision if dash else None


def calendar_problem(code: str) -> str | None:
    """Why `code` names no calendar (a sentence naming it), or None when it does."""
    country, subdivision = _split(code)
    supported = _supported()
    if country not in supported or subdivision == "":
        return (
            f"holiday_calendar {code!r} is not a known calendar "
            "(a country such as ES, PT, US, or country-subdivision such as ES-MD, US-CA)"
        )
    if subdivision is not None and subdivision not in supported[country]:
        return f"holiday_calendar {code!r}: {country} has no subdivision {subdivision!r}"
    return None


def holidays_between(code: str, first: date, last: date) -> list[tuple[date, str]]:
    """The public holidays of calendar `code` from `first` to `last` (inclusive), with
    their names in the calendar's own language ("Inmaculada Concepción"), whatever
    the machine's locale. Several holidays on one day share one name, joined by "; "."""
    country, subdivision = _split(code)
    probe = holidays.country_holidays(country, subdiv=subdivision)
    calendar = holidays.country_holidays(
        country,
        subdiv=subdivision,
        # One year more: a holiday of next year can be observed on this year's last days.
        years=range(first.year, last.year + 2),
        # Explicit: left unset, the library follows the process's LANG.
        language=probe.default_language,
    )
    return sorted((day, name) for day, name in calendar.items() if first <= day <= last)


@dataclass(frozen=True)
class Preset:
    """Calling rules a `campaign create --rules NAME` expands into ordinary columns."""

    name: str
    summary: str
    hours: tuple[time, time]
    days: list[int] | None
    holiday_calendar: str | None
    timezone: str | None


# A starting point, not legal advice (docs/campaigns.md#presets).
PRESETS: dict[str, Preset] = {
    "ES": Preset(
        name="ES",
        summary="Spain: 09:00-21:00, Monday to Friday, not on national public holidays",
        hours=(time(9), time(21)),
        days=[1, 2, 3, 4, 5],
        holiday_calendar="ES",
        timezone="Europe/Madrid",
    ),
    "US": Preset(
        name="US",
        summary="United States: 08:00-21:00 in the called party's local time",
        hours=(time(8), time(21)),
        days=None,
        holiday_calendar=None,
        timezone=None,
    ),
}
