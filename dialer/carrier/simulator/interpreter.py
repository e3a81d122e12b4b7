"""The callee's side of an answered call: TwiML executed verb by verb as Twilio does,
on the simulated clock, with the callee's behaviour deciding what keys are pressed and
when the line goes dead. Semantics: docs/carrier.md#twiml.

Every request it makes (a <Gather>'s action, a <Redirect>, a <Dial>'s action) goes
through the simulator's Delivery, signed like Twilio's, and is recorded on the call."""

from __future__ import annotations

import asyncio
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import structlog

from dialer.carrier.simulator.callee import Callee, Press
from dialer.carrier.simulator.delivery import call_params
from dialer.carrier.simulator.document import (
    ACTED_VERBS,
    APP_ERROR_SECONDS,
    GATHER_NESTABLE,
    SKIPPED_VERBS,
    GatherSpec,
    TwimlError,
    loops,
    method_of,
    parse,
    pause_seconds,
    play_seconds,
    say_seconds,
    text_of,
)
from dialer.carrier.simulator.records import AppError, DialLeg, Heard, SimCall, new_sid

if TYPE_CHECKING:
    from dialer.carrier.simulator.core import Simulator

log = structlog.get_logger(__name__)

# A key pressed "after the prompt" comes this long after the gather's prompt ends.
PRESS_AFTER_PROMPT_SECONDS = 1.0
# How long a <Dial>ed number rings before it answers (or is busy, or fails).
DIAL_RING_SECONDS = 3.0
# What a <Dial>ed number's scripted outcome means for DialCallStatus.
_DIAL_STATUS = {"answered": "completed", "machine": "completed", "busy": "busy", "no-answer": "no-answer"}


class Ended(Exception):
    """The call is over; `reason` says why (see SimCall.ended_by)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallClock:
    """Simulated seconds since the callee picked up, and the moment the call must end
    (the callee hangs up, or TimeLimit): every wait of an answered call goes through it."""

    def __init__(self, sim: Simulator, call: SimCall, *, deadline: float, reason: str) -> None:
        self.sim = sim
        self.call = call
        self.elapsed = 0.0
        self.deadline = deadline
        self.reason = reason

    def end_at(self, at: float, reason: str) -> None:
        """Make the call end at `at` (simulated seconds since pick-up) if that is sooner."""
        if at < self.deadline:
            self.deadline, self.reason = at, reason

    async def wait(self, seconds: float) -> None:
        """Let `seconds` of simulated time pass; Ended if the call ends meanwhile."""
        call = self.call
        if call.hangup_requested.is_set():
            raise Ended("api")
        budget = max(0.0, self.deadline - self.elapsed)
        cut = seconds >= budget
        step = budget if cut else max(0.0, seconds)
        real = self.sim.scaled(step)
        started = time.monotonic()
        if real <= 0:
            await asyncio.sleep(0)
            hung = call.hangup_requested.is_set()
        else:
            try:
                await asyncio.wait_for(call.hangup_requested.wait(), real)
                hung = True
            except TimeoutError:
                hung = False
        if hung:
            scale = self.sim.settings.time_scale
            spent = 0.0 if self.sim.instant else (time.monotonic() - started) / scale
            self.elapsed += min(step, spent)
            raise Ended("api")
        self.elapsed += step
        if cut:
            raise Ended(self.reason)


@dataclass
class _Document:
    body: str | None
    url: str | None  # where it came from; None for the inline Twiml parameter


class Interpreter:
    """Runs one call's TwiML for one callee."""

    def __init__(self, sim: Simulator, call: SimCall, clock: CallClock, callee: Callee) -> None:
        self.sim = sim
        self.call = call
        self.clock = clock
        self.callee = callee
        self._presses: list[Press] = list(callee.presses)

    async def run(self, body: str | None, url: str | None) -> None:
        """Execute the document (and those it leads to) until it runs out; Ended if the
        call ends otherwise. `body` None with a `url` means the fetch failed."""
        current = _Document(body, url)
        try:
            while True:
                if current.body is None:
                    if current.url is None:
                        return
                    raise TwimlError(11200, "HTTP retrieval failure", current.url)
                self.call.documents.append(current.body)
                following = await self._execute(parse(current.body, current.url), current.url)
                if following is None:
                    return
                current = following
        except TwimlError as exc:
            await self._application_error(exc)

    async def _application_error(self, exc: TwimlError) -> None:
        self.call.app_errors.append(AppError(exc.code, exc.message, exc.url))
        log.info("sim_application_error", call_sid=self.call.sid, code=exc.code, error=exc.message)
        await self.clock.wait(APP_ERROR_SECONDS)  # "an application error has occurred. Goodbye."
        raise Ended("error")

    async def _execute(self, root: ET.Element, url: str | None) -> _Document | None:
        """Run a document's verbs; the next document if one replaces it, else None."""
        for verb in root:
            tag = verb.tag
            if tag in SKIPPED_VERBS:
                self._heard(verb, text="(not simulated)")
                continue
            if tag not in ACTED_VERBS:
                raise TwimlError(12200, f"Schema validation warning: <{tag}> is not a TwiML voice verb", url)
            following = await self._verb(verb, url)
            if following is not None:
                return following
        return None

    async def _verb(self, verb: ET.Element, url: str | None) -> _Document | None:
        tag = verb.tag
        if tag in ("Say", "Play", "Pause"):
            await self._speak(verb, in_gather=False)
            return None
        if tag == "Gather":
            return await self._gather(verb, url)
        if tag == "Redirect":
            target = text_of(verb)
            if not target:
                raise TwimlError(12200, "Schema validation warning: <Redirect> without a URL", url)
            absolute = _resolve(target, url)
            self._heard(verb, text=absolute)
            return await self._request("redirect", absolute, method_of(verb), {})
        if tag == "Dial":
            return await self._dial(verb, url)
        self._heard(verb)  # Hangup, Reject: after answer both just end the call
        raise Ended("hangup")

    # ---- speech ----------------------------------------------------------------------

    async def _speak(self, verb: ET.Element, *, in_gather: bool, until: float | None = None) -> bool:
        """Say/Play/Pause `verb` (every loop); with `until` (clock time), stop there and
        return True if it was interrupted."""
        for _ in loops(verb) if verb.tag != "Pause" else iter((0,)):
            seconds, text = _length(verb)
            if until is not None and until <= self.clock.elapsed:
                return True
            heard = self._heard(verb, text=text, in_gather=in_gather)
            if until is not None and until < self.clock.elapsed + seconds:
                heard.interrupted = True
                await self.clock.wait(until - self.clock.elapsed)
                return True
            try:
                await self.clock.wait(seconds)
            except Ended:
                heard.interrupted = True
                raise
            if seconds <= 0:
                break  # nothing to repeat: loop="0" on an empty verb must not spin
        return False

    # ---- gather ----------------------------------------------------------------------

    async def _gather(self, verb: ET.Element, url: str | None) -> _Document | None:
        spec = GatherSpec.of(verb)
        start = self.clock.elapsed
        record = self._heard(verb)
        press = self._presses.pop(0) if spec.dtmf and self._presses else None
        press_at = start + press.after if press is not None and press.after is not None else None
        interrupted = False
        for nested in verb:
            if nested.tag not in GATHER_NESTABLE:
                raise TwimlError(12200, f"Schema validation warning: <{nested.tag}> inside <Gather>", url)
            if await self._speak(nested, in_gather=True, until=press_at):
                interrupted = True
                break
        if press is not None and press_at is None:
            press_at = self.clock.elapsed + PRESS_AFTER_PROMPT_SECONDS
        if not interrupted:
            silence_ends = self.clock.elapsed + spec.timeout
            if press_at is None or press_at >= silence_ends:
                await self.clock.wait(spec.timeout)
                return await self._no_input(spec, url, record)
            await self.clock.wait(max(0.0, press_at - self.clock.elapsed))
        assert press is not None  # interrupted only by a press
        self.call.keys.append(press.digits)
        digits, finished_on = _collect(press.digits, spec)
        if digits is None:  # neither numDigits reached nor finishOnKey: wait for more
            await self.clock.wait(spec.timeout)
            digits = press.digits
        record.text = digits
        if not digits:  # only the finishOnKey: Twilio treats it as no input
            return await self._no_input(spec, url, record)
        target = _resolve(spec.action, url, what="<Gather> action")
        params = {"Digits": digits, "FinishedOnKey": finished_on}
        return await self._request("action", target, spec.method, params)

    async def _no_input(self, spec: GatherSpec, url: str | None, record: Heard) -> _Document | None:
        record.text = ""
        if not spec.action_on_empty_result:
            return None  # falls through to the verb after the <Gather>
        target = _resolve(spec.action, url, what="<Gather> action")
        return await self._request("action", target, spec.method, {"Digits": "", "FinishedOnKey": ""})

    # ---- dial ------------------------------------------------------------------------

    async def _dial(self, verb: ET.Element, url: str | None) -> _Document | None:
        children = list(verb)
        number = text_of(children[0]) if children else text_of(verb)
        if not number:
            raise TwimlError(12200, "Schema validation warning: <Dial> without a number", url)
        self._heard(verb, text=number)
        status = _DIAL_STATUS.get(self.sim.leg_outcome(number), "failed")
        timeout = _float(verb.get("timeout"), 30.0)
        time_limit = int(_float(verb.get("timeLimit"), 14400.0))
        ring = timeout if status == "no-answer" else min(DIAL_RING_SECONDS, timeout)
        talk = float(self.sim.call_seconds(time_limit)) if status == "completed" else 0.0
        leg = DialLeg(number, verb.get("callerId"), status, talk, new_sid("CA"))
        self.call.dialed.append(leg)
        await self.clock.wait(ring)
        await self.clock.wait(talk)
        if not (action := verb.get("action")):
            return None  # continues with the verb after the <Dial>
        params = {"DialCallStatus": status, "DialCallSid": leg.sid}
        if status == "completed":
            params["DialCallDuration"] = str(round(talk))
        target = _resolve(action, url, what="<Dial> action")
        return await self._request("dial-action", target, method_of(verb), params)

    # ---- requests and records ----------------------------------------------------------

    async def _request(self, kind: str, url: str, method: str, extra: dict[str, str]) -> _Document:
        """Ask the application for the next document; an answer that is not 2xx is an
        application error, as on Twilio (which does not retry these)."""
        params = call_params(self.call)
        params.update(extra)
        body = await self.sim.delivery.send(self.call, kind, url, params, method, attempts=1)
        if body is None:
            record = self.call.callbacks[-1]
            why = f"HTTP {record.http_status}" if record.http_status else (record.error or "no answer")
            raise TwimlError(11200, f"HTTP retrieval failure: {why}", url)
        return _Document(body, url)

    def _heard(self, verb: ET.Element, *, text: str = "", in_gather: bool = False) -> Heard:
        heard = Heard(verb.tag, self.clock.elapsed, text, dict(verb.attrib), in_gather)
        self.call.transcript.append(heard)
        return heard


def _length(verb: ET.Element) -> tuple[float, str]:
    """(simulated seconds, recorded text) of one loop of a Say, Play or Pause."""
    if verb.tag == "Say":
        text = text_of(verb)
        return say_seconds(text), text
    if verb.tag == "Play":
        return play_seconds(verb), text_of(verb) or verb.get("digits", "")
    return pause_seconds(verb), ""


def _collect(pressed: str, spec: GatherSpec) -> tuple[str | None, str]:
    """(Digits, FinishedOnKey) once the keys in `pressed` end the gather, or (None, "")
    if they do not (neither numDigits reached nor finishOnKey pressed)."""
    digits = ""
    for key in pressed:
        if spec.finish_on_key and key == spec.finish_on_key:
            return digits, key
        digits += key
        if spec.num_digits is not None and len(digits) >= spec.num_digits:
            return digits, ""
    return None, ""


def _resolve(target: str | None, base: str | None, *, what: str = "URL") -> str:
    """`target` made absolute against the current document's URL (a missing target is
    the document's own URL, as Twilio's default action is)."""
    if target is None:
        if base is None:
            raise TwimlError(11100, f"Invalid URL: {what} missing and the document has no URL")
        return base
    if urlsplit(target).scheme in ("http", "https"):
        return target
    if base is None:
        raise TwimlError(11100, f"Invalid URL: relative {what} {target!r} in a document that has no URL")
    return urljoin(base, target)


def _float(raw: str | None, default: float) -> float:
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default
