"""Phone numbers: parsing to E.164 and the time zone a number implies, through
`phonenumbers` (Google's libphonenumber metadata), never by hand."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from phonenumbers import timezone as number_timezones


@dataclass(frozen=True)
class ParsedNumber:
    """A number that parsed and is valid: its E.164 form and implied zone, if one."""

    e164: str
    implied_timezone: str | None


class InvalidNumber(ValueError):
    """A number that is not a valid phone number; the message says why."""


def parse(raw: str, default_region: str | None = None) -> ParsedNumber:
    """Normalise `raw` (as typed by a person or stored in a CSV) to E.164.

    A number without a leading + needs `default_region` (ISO 3166 code such as
    "ES"). Raises InvalidNumber with a reason a person can act on.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidNumber("empty phone number")
    if len(text) > 40:
        raise InvalidNumber("phone number is too long")
    region = default_region.upper() if default_region else None
    if not text.startswith("+") and not text.startswith("00") and region is None:
        raise InvalidNumber(f"{text!r} has no country code (write +<country> or pass --default-region)")
    if text.startswith("00") and region is None:
        # 00 is the international prefix almost everywhere; without a region
        # phonenumbers cannot know that, so say it the E.164 way.
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"{text!r} is not a phone number ({_reason(exc)})") from None
    # One number_type() answers both questions: valid means its type is known (what
    # is_valid_number checks), and a geographical type's zones are a prefix lookup.
    # Calling is_valid_number and time_zones_for_number would classify the number
    # twice, the costliest step of a bulk import after parsing itself.
    kind = phonenumbers.number_type(number)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN:
        raise InvalidNumber(f"{text!r} is not a valid number for its country")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if phonenumbers.is_number_type_geographical(kind, number.country_code or 0):
        zone = _one_zone(number_timezones.time_zones_for_geographical_number(number))
    else:
        zone = _single_zone(number)
    return ParsedNumber(e164=e164, implied_timezone=zone)


def implied_timezone(e164: str) -> str | None:
    """The one IANA zone a number implies, or None when it implies several or none."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return _single_zone(number)


def _single_zone(number: phonenumbers.PhoneNumber) -> str | None:
    return _one_zone(number_timezones.time_zones_for_number(number))


def _one_zone(zones: tuple[str, ...] | list[str]) -> str | None:
    if len(zones) == 1 and zones[0] != "Etc/Unknown":
        return str(zones[0])
    return None


def _reason(exc: phonenumbers.NumberParseException) -> str:
    reasons = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "not a number",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return reasons.get(exc.error_type, "unparseable")
