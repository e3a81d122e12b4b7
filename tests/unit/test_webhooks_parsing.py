"""Turning Twilio's callback form fields into a CallEvent."""

from __future__ import annotations

from datetime import datetime

import pytest

from dialer.webhooks import MalformedCallback, call_event_from_form, parse_twilio_timestamp


def test_timestamp_rfc2822_becomes_naive_utc() -> None:
    """Twilio's RFC 2822 Timestamp is read as a naive UTC datetime."""
    assert parse_twilio_timestamp("Wed, 25 Nov 2026 19:26:17 +0000") == datetime(2026, 11, 25, 19, 26, 17)


def test_timestamp_with_offset_is_converted_to_utc() -> None:
    """A non-UTC offset is converted, not dropped."""
    assert parse_twilio_timestamp("Wed, 25 Nov 2026 20:26:17 +0100") == datetime(2026, 11, 25, 19, 26, 17)


@pytest.mark.parametrize("raw", [None, "", "yesterday", "Wed, 99 Nov 2026 99:00:00 +0000"])
def test_unreadable_timestamp_is_none(raw: str | None) -> None:
    """An absent or unreadable Timestamp is None rather than an error."""
    assert parse_twilio_timestamp(raw) is None


def test_final_status_event_has_every_field() -> None:
    """A final callback carries duration, answering, error and end time."""
    event = call_event_from_form(
        {
            "CallSid": "CA0123",
            "CallStatus": "completed",
            "CallDuration": "42",
            "AnsweredBy": "human",
            "ErrorCode": "31005",
            "ErrorMessage": "gone",
            "SequenceNumber": "3",
            "Timestamp": "Wed, 25 Nov 2026 19:26:17 +0000",
            "AccountSid": "AC1",
        }
    )
    stamp = datetime(2026, 11, 25, 19, 26, 17)
    assert event.call_sid == "CA0123"
    assert event.status == "completed"
    assert event.duration == 42
    assert event.answered_by == "human"
    assert event.error_code == 31005
    assert event.error_message == "gone"
    assert event.sequence_number == 3
    assert event.timestamp == stamp
    assert event.end_time == stamp
    assert event.start_time is None


def test_non_final_status_has_no_end_time() -> None:
    """ringing is not final: no end_time, status kept as Twilio spells it."""
    event = call_event_from_form(
        {"CallSid": "CA1", "CallStatus": "ringing", "Timestamp": "Wed, 25 Nov 2026 19:26:17 +0000"}
    )
    assert event.status == "ringing"
    assert event.end_time is None
    assert event.start_time is None
    assert event.timestamp == datetime(2026, 11, 25, 19, 26, 17)


def test_in_progress_sets_start_time() -> None:
    """in-progress marks the answer: its Timestamp is the start time."""
    event = call_event_from_form(
        {"CallSid": "CA1", "CallStatus": "in-progress", "Timestamp": "Wed, 25 Nov 2026 19:26:17 +0000"}
    )
    assert event.start_time == datetime(2026, 11, 25, 19, 26, 17)
    assert event.end_time is None


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled"])
def test_every_final_twilio_status_sets_end_time(status: str) -> None:
    """Each of Twilio's final statuses takes the Timestamp as end time."""
    event = call_event_from_form(
        {"CallSid": "CA1", "CallStatus": status, "Timestamp": "Wed, 25 Nov 2026 19:26:17 +0000"}
    )
    assert event.end_time == datetime(2026, 11, 25, 19, 26, 17)


def test_garbled_optional_fields_become_none() -> None:
    """Unreadable or impossible optional numbers never reject the callback."""
    event = call_event_from_form(
        {"CallSid": "CA1", "CallStatus": "completed", "CallDuration": "-5", "ErrorCode": "x", "SequenceNumber": ""}
    )
    assert event.duration is None
    assert event.error_code is None
    assert event.sequence_number is None
    assert event.answered_by is None


@pytest.mark.parametrize(
    "form",
    [
        {"CallStatus": "completed"},
        {"CallSid": "CA1"},
        {"CallSid": " ", "CallStatus": "completed"},
        {"CallSid": "CA" + "0" * 300, "CallStatus": "completed"},
    ],
)
def test_missing_or_oversized_required_fields_are_malformed(form: dict[str, str]) -> None:
    """CallSid and CallStatus are required and must fit the schema."""
    with pytest.raises(MalformedCallback):
        call_event_from_form(form)


def test_values_beyond_their_columns_are_malformed() -> None:
    """Numbers past 32 bits and a Timestamp before 2000 or more than a day ahead of
    `now` raise MalformedCallback (→ 400); the edges themselves are accepted."""
    now = datetime(2026, 11, 25, 12, 0, 0)
    base = {"CallSid": "CA1", "CallStatus": "completed"}
    ok = call_event_from_form(
        {**base, "CallDuration": str(2**31 - 1), "ErrorCode": str(-(2**31 - 1)),
         "Timestamp": "Thu, 26 Nov 2026 12:00:00 +0000"},
        now=now,
    )
    assert ok.duration == 2**31 - 1 and ok.end_time == datetime(2026, 11, 26, 12, 0, 0)
    for extra in (
        {"CallDuration": str(2**31)},
        {"ErrorCode": str(2**63)},
        {"SequenceNumber": str(2**31)},
        {"Timestamp": "Thu, 26 Nov 2026 12:00:01 +0000"},
        {"Timestamp": "Fri, 31 Dec 1999 23:59:59 +0000"},
    ):
        with pytest.raises(MalformedCallback, match="out of range"):
            call_event_from_form({**base, **extra}, now=now)
    assert call_event_from_form({**base, "CallDuration": "-5"}, now=now).duration is None  # garbled, not absurd


def test_a_nul_in_a_text_field_is_malformed() -> None:
    """PostgreSQL text cannot hold NUL: a field carrying one is MalformedCallback."""
    for key in ("CallSid", "CallStatus", "AnsweredBy", "ErrorMessage"):
        form = {"CallSid": "CA1", "CallStatus": "completed", key: "x\x00y"}
        with pytest.raises(MalformedCallback, match=f"{key} contains a NUL character"):
            call_event_from_form(form)
