"""Holiday calendars from the `holidays` package (docs/campaigns.md#calendar): which
codes name one, and the dates and names materialised for a span of days."""

from __future__ import annotations

from datetime import date

import pytest

from dialer.calendars import calendar_problem, holidays_between


@pytest.mark.parametrize("code", ["ES", "ES-MD", "ES-CT", "PT", "US", "US-CA", "US-NY"])
def test_known_codes_name_a_calendar(code: str) -> None:
    """Countries and country-subdivision pairs the package knows are accepted."""
    assert calendar_problem(code) is None


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("XX", "'XX' is not a known calendar"),
        ("es", "'es' is not a known calendar"),
        ("ES-ZZ", "ES has no subdivision 'ZZ'"),
        ("", "'' is not a known calendar"),
        ("ES-", "'ES-'"),
    ],
)
def test_unknown_codes_are_named_in_the_problem(code: str, words: str) -> None:
    """A code that names no calendar gets a sentence naming it (and, for a bad
    subdivision, the country that lacks it)."""
    problem = calendar_problem(code)
    assert problem is not None and words in problem


def test_holidays_carry_the_calendars_own_names_whatever_the_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spain's 8 December is "Inmaculada Concepción" even in an English or German
    locale (the package otherwise follows LANG); only days inside the span come back."""
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.setenv(var, "de_DE.UTF-8")
    days = dict(holidays_between("ES", date(2026, 12, 1), date(2026, 12, 31)))
    assert days == {date(2026, 12, 8): "Inmaculada Concepción", date(2026, 12, 25): "Natividad del Señor"}
    us = dict(holidays_between("US", date(2026, 11, 1), date(2026, 11, 30)))
    assert us[date(2026, 11, 26)] == "Thanksgiving Day"


def test_a_subdivision_adds_its_own_holidays() -> None:
    """ES-MD has the Community of Madrid's 2 May where ES does not."""
    madrid = dict(holidays_between("ES-MD", date(2026, 5, 1), date(2026, 5, 31)))
    national = dict(holidays_between("ES", date(2026, 5, 1), date(2026, 5, 31)))
    assert madrid[date(2026, 5, 2)] == "Fiesta de la Comunidad de Madrid"
    assert date(2026, 5, 2) not in national
