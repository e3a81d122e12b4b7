"""The carrier port: everything the engine asks of Twilio (or the simulator), and the
shape of the answers. Implementations: `dialer.carrier.twilio` (the official `twilio`
package, used for both real Twilio and the simulator through `api_base_url`) and the
simulator server in `dialer.carrier.simulator`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dialer.models import CallEvent

# Twilio's CallStatus values that mean the call is over.
FINAL_TWILIO_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})

# Twilio error codes that say the number itself is wrong or unreachable for good:
# the contact becomes invalid_number at once, without retries.
# 21211 invalid To, 21214 To cannot be reached, 21215 geo-permission (not dialable
# from this account), 21217 To not a valid phone number, 21401 invalid number,
# 21407 not supported, 21612 cannot route, 21614 not a mobile for SMS-capable check,
# 13224 invalid number (call), 13225 forbidden number.
PERMANENT_ERROR_CODES = frozenset({21211, 21214, 21215, 21217, 21401, 21407, 21612, 21614, 13224, 13225})


@dataclass(frozen=True)
class DialRequest:
    """One outbound call to place."""

    to: str
    from_: str
    status_callback_url: str
    twiml: str | None = None  # inline TwiML, or
    twiml_url: str | None = None  # a URL the carrier fetches it from
    timeout_seconds: int = 30  # ring time
    time_limit_seconds: int = 600  # cost guard
    machine_detection: bool = False
    # With machine_detection: wait for the end of a machine's greeting (the beep)
    # before the TwiML runs, so a voicemail message lands whole on the recording.
    detect_message_end: bool = False
    record: bool = False
    recording_callback_url: str | None = None


@dataclass(frozen=True)
class CarrierCall:
    """The carrier's record of a call (REST create/fetch/list)."""

    sid: str
    status: str
    to: str
    from_: str
    date_created: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    answered_by: str | None = None

    def as_event(self) -> CallEvent:
        """The same facts as a CallEvent, so a fetch is applied like a callback."""
        return CallEvent(
            call_sid=self.sid,
            status=self.status,
            duration=self.duration,
            answered_by=self.answered_by,
            start_time=self.start_time,
            end_time=self.end_time,
        )


class Carrier(Protocol):
    """What the engine needs from a carrier. Every method raises
    `dialer.errors.CarrierError` with a `kind` the engine acts on."""

    async def dial(self, request: DialRequest) -> CarrierCall:
        """Place a call. Never retried inside: a retry could ring a phone twice."""
        ...

    async def fetch(self, sid: str) -> CarrierCall:
        """The carrier's current record of one call."""
        ...

    async def find(self, to: str, since: datetime) -> list[CarrierCall]:
        """Calls to `to` created at or after `since` (for reconciling a request whose
        outcome is unknown)."""
        ...

    async def hangup(self, sid: str) -> None:
        """End a live call."""
        ...

    async def close(self) -> None:
        """Release HTTP sessions."""
        ...
