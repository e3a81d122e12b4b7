"""Phone number parsing and implied zones."""

from __future__ import annotations

import pytest

from dialer.numbers import InvalidNumber, implied_timezone, parse


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+34 911 23 45 67", None, "+34911234567"),
        ("911 234 567", "ES", "+34911234567"),
        ("0034911234567", None, "+34911234567"),
        ("(212) 555-1234", "us", "+12125551234"),
    ],
)
def test_numbers_normalise_to_e164(raw: str, region: str | None, e164: str) -> None:
    """Spacing, national format and 00-prefix all normalise to E.164."""
    assert parse(raw, region).e164 == e164


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", None, "empty"),
        ("911234567", None, "no country code"),
        ("+34 12", None, "not a valid number"),
        ("hello", "ES", "not a phone number"),
        ("+999 123456789", None, "unknown country code"),
    ],
)
def test_invalid_numbers_say_why(raw: str, region: str | None, reason: str) -> None:
    """Each rejection carries a reason a person can act on."""
    with pytest.raises(InvalidNumber, match=reason):
        parse(raw, region)


def test_implied_zone_only_when_unambiguous() -> None:
    """Madrid and the Canaries differ; a US toll-free number implies no single zone."""
    assert parse("+34911234567").implied_timezone == "Europe/Madrid"
    assert implied_timezone("+34922123456") == "Atlantic/Canary"
    assert implied_timezone("+12125551234") == "America/New_York"
    assert implied_timezone("+18005551234") is None
