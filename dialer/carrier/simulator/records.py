"""What the simulator keeps about each call, and the small shared pieces (ids, dates,
the account defaults) every part of it uses."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

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

    kind: str  # "status", "recording" or "twiml"
    url: str
    params: dict[str, str]
    at: float  # monotonic time of the first attempt
    http_status: int | None = None  # of the last attempt; None if no HTTP answer
    attempts: int = 0
    delivered: bool = False
    dropped: bool = False
    error: str | None = None


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

    @property
    def machine_detection(self) -> bool:
        """Whether the create asked for answering-machine detection."""
        return (self.param("MachineDetection") or "").lower() in ("enable", "detectmessageend")

    @property
    def record(self) -> bool:
        """Whether the create asked for a recording."""
        return (self.param("Record") or "").lower() == "true"
