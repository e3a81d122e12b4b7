"""What the simulator keeps about each call, and the small shared pieces (ids, dates,
the account defaults) every part of it uses."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dialer.carrier.simulator.callee import Callee

SIMULATOR_ACCOUNT_SID = "AC" + "0" * 32
SIMULATOR_AUTH_TOKEN = "simulator-auth-token"  # noqa: S105 - a public default for a local fake
API_VERSION = "2010-04-01"
OUTCOMES = ("answered", "busy", "no-answer", "failed", "machine")


def rfc2822(moment: datetime) -> str:
    """A UTC datetime the way Twilio writes it: `Tue, 31 Aug 2010 20:36:28 +0000`."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def new_sid(prefix: str) -> str:
    """A Twilio-shaped sid: the two-letter prefix and 32 hex digits."""
    return prefix + uuid.uuid4().hex


class Gate:
    """An Event-style switch: while set, create responses are held (after the call
    exists); clearing it releases them. Used by crash tests."""

    def __init__(self) -> None:
        self._released = asyncio.Event()
        self._released.set()

    def set(self) -> None:
        """Start holding."""
        self._released.clear()

    def clear(self) -> None:
        """Release everything held, and stop holding."""
        self._released.set()

    def is_set(self) -> bool:
        """Whether responses are being held."""
        return not self._released.is_set()

    async def wait_released(self) -> None:
        """Return once the gate is not holding."""
        await self._released.wait()


@dataclass
class CallbackRecord:
    """One webhook the simulator sent (or dropped) for a call."""

    # "status", "recording", "twiml" (the create's Url on answer), "action" (a
    # <Gather>'s), "redirect", "dial-action" (a <Dial>'s action)
    kind: str
    url: str
    params: dict[str, str]
    at: float  # monotonic time of the first attempt
    http_status: int | None = None  # of the last attempt; None if no HTTP answer
    attempts: int = 0
    delivered: bool = False
    dropped: bool = False
    error: str | None = None
    body: str | None = None  # of the last HTTP answer


@dataclass
class Heard:
    """One verb the callee heard (or that ran while they were on the line)."""

    verb: str  # Say, Play, Pause, Gather, Redirect, Dial, Hangup, Reject, or a skipped verb
    at: float  # simulated seconds since the callee picked up
    text: str = ""  # what a Say said, a Play played, a Dial dialed, a Redirect requested
    attrs: dict[str, str] = field(default_factory=dict)
    in_gather: bool = False
    interrupted: bool = False  # cut short: a key was pressed or the call ended meanwhile


@dataclass
class DialLeg:
    """A <Dial> the call made."""

    number: str
    caller_id: str | None
    status: str  # DialCallStatus: completed, busy, no-answer, failed
    seconds: float  # talk time, simulated
    sid: str


@dataclass
class AppError:
    """An application error, as Twilio's debugger would show it; the call ended on it."""

    code: int  # 11200 HTTP retrieval failure, 12100 document parse failure, 11100 bad URL, 12200 schema
    message: str
    url: str | None = None


@dataclass
class SimCall:
    """The simulator's record of one created call."""

    sid: str
    account_sid: str
    to: str
    from_: str
    params: dict[str, list[str]]
    outcome: str
    created_at: float  # monotonic
    created_wall: datetime  # aware UTC
    status: str = "queued"
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    answered_by: str | None = None
    twiml: str | None = None
    callbacks: list[CallbackRecord] = field(default_factory=list)
    hangup_status: str | None = None
    sequence: int = 0
    callee: Callee | None = None  # who picked up; None if nobody did
    # What the callee experienced (docs/carrier.md#what-it-records):
    transcript: list[Heard] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # keys typed, one entry per <Gather>
    dialed: list[DialLeg] = field(default_factory=list)
    app_errors: list[AppError] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)  # every TwiML document run, in order
    beep_at: float | None = None  # an answering machine's beep, seconds since pick-up
    ended_by: str | None = None  # document, hangup, callee, time-limit, api, error
    hangup_requested: asyncio.Event = field(default_factory=asyncio.Event)
    final: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # lifecycle and callbacks over

    def param(self, name: str) -> str | None:
        """The first value of a create parameter, or None."""
        values = self.params.get(name)
        return values[0] if values else None

    def status_callbacks(self) -> list[CallbackRecord]:
        """Status callbacks in the order they were sent (including dropped ones)."""
        return [c for c in self.callbacks if c.kind == "status"]

    def requests(self, kind: str | None = None) -> list[CallbackRecord]:
        """Requests made for this call (of one kind if given), in order."""
        return [c for c in self.callbacks if kind is None or c.kind == kind]

    def said(self) -> list[str]:
        """The texts of every <Say> that started, in order (loops once each)."""
        return [h.text for h in self.transcript if h.verb == "Say"]

    def heard(self, fragment: str) -> bool:
        """Whether some <Say> the callee heard contains `fragment` (case-insensitive)."""
        wanted = fragment.casefold()
        return any(wanted in text.casefold() for text in self.said())

    def voicemail(self) -> list[str]:
        """What an answering machine recorded: the <Say> texts begun at or after its beep."""
        if self.beep_at is None:
            return []
        return [h.text for h in self.transcript if h.verb == "Say" and h.at >= self.beep_at]

    @property
    def machine_detection(self) -> bool:
        """Whether the create asked for answering-machine detection."""
        return self.detection_mode in ("enable", "detectmessageend")

    @property
    def detection_mode(self) -> str:
        """The create's MachineDetection, lower-cased ("" when not asked)."""
        return (self.param("MachineDetection") or "").lower()

    @property
    def record(self) -> bool:
        """Whether the create asked for a recording."""
        return (self.param("Record") or "").lower() == "true"
