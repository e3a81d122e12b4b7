"""TwiML documents as the simulator reads them: parsing, and how long each verb takes
in simulated time. Errors carry the code Twilio's debugger would show."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

# Speech rate of text-to-speech: about 150 words a minute.
SAY_CHARS_PER_SECOND = 15.0
# A <Play> of a URL: the simulator has no audio, so every file lasts this long.
PLAY_SECONDS = 5.0
# Each DTMF digit (or `w`, half a second of wait) a <Play digits=…> sends.
PLAY_DIGIT_SECONDS = 0.5
# Twilio's spoken "an application error has occurred" before it hangs up.
APP_ERROR_SECONDS = 3.0

# Verbs Twilio runs that the simulator does not act out: recorded and skipped.
SKIPPED_VERBS = frozenset(
    {"Connect", "Echo", "Enqueue", "Leave", "Message", "Pay", "Prompt", "Queue", "Record", "Refer", "Sms",
     "Start", "Stop"}
)  # fmt: skip
ACTED_VERBS = frozenset({"Say", "Play", "Pause", "Gather", "Redirect", "Dial", "Hangup", "Reject"})
GATHER_NESTABLE = frozenset({"Say", "Play", "Pause"})

_DOCTYPE = re.compile(r"<!DOCTYPE", re.IGNORECASE)


class TwimlError(Exception):
    """An application error: the document could not be fetched, parsed or run."""

    def __init__(self, code: int, message: str, url: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.url = url


def parse(body: str, url: str | None) -> ET.Element:
    """The `<Response>` element of a TwiML document; TwimlError 12100 if it is not one."""
    if _DOCTYPE.search(body):
        # No DTD means no entity expansion: the one XML attack the parser could suffer.
        raise TwimlError(12100, "Document parse failure: a DOCTYPE is not accepted", url)
    try:
        root = ET.fromstring(body.strip())  # noqa: S314 - DTDs refused above
    except ET.ParseError as exc:
        raise TwimlError(12100, f"Document parse failure: {exc}", url) from None
    if root.tag != "Response":
        raise TwimlError(12100, f"Document parse failure: the root is <{root.tag}>, not <Response>", url)
    return root


def text_of(element: ET.Element) -> str:
    """The text an element carries, SSML children (`<prosody>`, `<break>` …) included."""
    return " ".join(" ".join(element.itertext()).split())


def loops(element: ET.Element) -> Iterator[int]:
    """Iteration numbers of a verb with a `loop` attribute: loop="0" repeats forever."""
    count = _int(element.get("loop"), 1)
    i = 0
    while count <= 0 or i < count:
        yield i
        i += 1


def say_seconds(text: str) -> float:
    """How long a <Say> of `text` takes once (at least a second when it says anything)."""
    return max(1.0, len(text) / SAY_CHARS_PER_SECOND) if text else 0.0


def play_seconds(element: ET.Element) -> float:
    """How long one loop of a <Play> takes."""
    digits = element.get("digits")
    if digits and not text_of(element):
        return PLAY_DIGIT_SECONDS * len(digits)
    return PLAY_SECONDS


def pause_seconds(element: ET.Element) -> float:
    """A <Pause>'s length (default one second)."""
    return max(0.0, _number(element.get("length"), 1.0))


@dataclass(frozen=True)
class GatherSpec:
    """The attributes of a <Gather>, with Twilio's defaults."""

    num_digits: int | None  # None: unlimited
    timeout: float  # seconds of silence that end it (and between digits)
    finish_on_key: str  # "" = none
    action: str | None
    method: str
    action_on_empty_result: bool
    dtmf: bool  # whether `input` takes keys

    @classmethod
    def of(cls, element: ET.Element) -> GatherSpec:
        """Read a <Gather> element."""
        num = _int(element.get("numDigits"), 0)
        return cls(
            num_digits=num if num > 0 else None,
            timeout=max(0.0, _number(element.get("timeout"), 5.0)),
            finish_on_key=element.get("finishOnKey", "#"),
            action=element.get("action") or None,
            method=method_of(element),
            action_on_empty_result=element.get("actionOnEmptyResult", "").lower() == "true",
            dtmf="dtmf" in element.get("input", "dtmf").lower().split(),
        )


def method_of(element: ET.Element) -> str:
    """A verb's `method` attribute: GET or POST (the default)."""
    return "GET" if element.get("method", "POST").upper() == "GET" else "POST"


def _number(raw: str | None, default: float) -> float:
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        return default
    return value if math.isfinite(value) else default


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default
