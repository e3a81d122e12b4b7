"""How a created call progresses: the CallStatus sequence of its outcome, the status
callbacks Twilio would send for it, the TwiML fetch on answer, and the recording."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dialer.carrier.simulator.callee import Callee
from dialer.carrier.simulator.delivery import base_params, call_params
from dialer.carrier.simulator.interpreter import CallClock, Ended, Interpreter
from dialer.carrier.simulator.records import API_VERSION, SimCall, new_sid, rfc2822

if TYPE_CHECKING:
    from dialer.carrier.simulator.core import Simulator

# DetectMessageEnd: how long after the greeting a machine's beep (or silence) is
# heard and reported, and how long it takes to tell a human ("Hello?", then silence).
MACHINE_END_SECONDS = 1.0
HUMAN_DETECTION_SECONDS = 2.0
# Which StatusCallbackEvent name asks for which CallStatus.
_EVENT_OF = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}


class CallProgress:
    """Plays the life of each call of one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def _pause(self, call: SimCall, seconds: float) -> bool:
        """Wait `seconds` of real time; True if a hang-up arrived meanwhile."""
        if call.hangup_requested.is_set():
            return True
        if seconds <= 0:
            await asyncio.sleep(0)
            return call.hangup_requested.is_set()
        try:
            await asyncio.wait_for(call.hangup_requested.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def run(self, call: SimCall, latency: float) -> None:
        """The whole life of `call`, from the create to its last callback."""
        deferred: list[dict[str, str]] = []
        try:
            await self._progress(call, latency, deferred)
        finally:
            if not call.final.is_set():  # cancelled by close(): count it as over
                self.sim.transition(call, "canceled")
            call.done.set()

    async def _progress(self, call: SimCall, latency: float, deferred: list[dict[str, str]]) -> None:
        sim = self.sim
        timeout = int(call.param("Timeout") or 60)
        time_limit = int(call.param("TimeLimit") or 14400)
        if await self._pause(call, latency + sim.latency()):
            return await self._finish(call, "canceled", 0, deferred)
        sim.transition(call, "initiated")
        await self._status_event(call, deferred)
        if call.outcome == "failed":
            await self._pause(call, sim.latency())
            return await self._finish(call, "failed", 0, deferred)
        if await self._pause(call, sim.latency()):
            return await self._finish(call, "canceled", 0, deferred)
        sim.transition(call, "ringing")
        await self._status_event(call, deferred)
        if call.outcome == "busy":
            await self._pause(call, sim.latency())
            return await self._finish(call, "busy", 0, deferred)
        if call.outcome == "no-answer":
            if await self._pause(call, sim.scaled(timeout)):
                return await self._finish(call, "canceled", 0, deferred)
            return await self._finish(call, "no-answer", 0, deferred)
        ring = sim.rng.uniform(1, max(1, min(timeout, 8)))
        if await self._pause(call, sim.scaled(ring)):
            return await self._finish(call, "canceled", 0, deferred)
        await self._answered(call, time_limit, deferred)
        return None

    async def _answered(self, call: SimCall, time_limit: int, deferred: list[dict[str, str]]) -> None:
        """Picked up: detect a machine if asked, fetch the TwiML, let the callee live
        through it (docs/carrier.md#twiml), then complete with the simulated duration."""
        sim = self.sim
        callee = call.callee or Callee.listen()
        clock = CallClock(sim, call, deadline=float(time_limit), reason="time-limit")
        sim.transition(call, "in-progress")
        try:
            detection_ms = await self._detect(call, callee, clock)
            body, url = call.twiml, call.param("Url") or None
            if url is not None:
                body = await self._fetch_twiml(call, url, detection_ms)
            await self._status_event(call, deferred)
            planned = sim.call_seconds(time_limit)
            if callee.kind == "listen":  # today's answered call: on the line for `planned`
                clock.end_at(planned, "callee")
            elif callee.kind == "hangup" and callee.hangup_after is not None:
                clock.end_at(clock.elapsed + callee.hangup_after, "callee")
            await Interpreter(sim, call, clock, callee).run(body, url)
            call.ended_by = "document"
            if callee.kind == "listen":  # stays until its time is up, as before
                await clock.wait(clock.deadline - clock.elapsed)
        except Ended as ended:
            call.ended_by = ended.reason
        duration = 0 if sim.instant else round(clock.elapsed)
        await self._finish(call, "completed", duration, deferred)
        if call.record and (recording_url := call.param("RecordingStatusCallback")):
            await self._recording(call, recording_url, duration)

    async def _detect(self, call: SimCall, callee: Callee, clock: CallClock) -> int | None:
        """Answering-machine detection as Twilio runs it before the TwiML: `Enable`
        answers at once (machine_start or human); `DetectMessageEnd` waits for a
        machine's greeting and beep (machine_end_beep/_silence/_other) and takes a
        moment to hear a human. Returns MachineDetectionDuration (ms) if asked."""
        if callee.is_machine:
            call.beep_at = callee.greeting  # when the machine starts recording
        mode = call.detection_mode
        if mode == "enable":
            call.answered_by = "machine_start" if callee.is_machine else "human"
            return 0
        if mode != "detectmessageend":
            return None
        if callee.is_machine:
            await clock.wait(callee.greeting + MACHINE_END_SECONDS)
            call.answered_by = f"machine_end_{callee.machine_end}"
        else:
            await clock.wait(HUMAN_DETECTION_SECONDS)
            call.answered_by = "human"
        return round(clock.elapsed * 1000)

    async def _status_event(self, call: SimCall, deferred: list[dict[str, str]]) -> None:
        """Send the callback for the call's new (non-final) status, if it was asked for."""
        url = call.param("StatusCallback")
        wanted = {e.lower() for e in call.params.get("StatusCallbackEvent", [])}
        if not url or _EVENT_OF.get(call.status) not in wanted:
            return
        params = self._status_params(call)
        if self.sim.rng.random() < self.sim.reorder:
            deferred.append(params)  # sent after the final one, out of order
            return
        await self._send(call, "status", url, params, call.param("StatusCallbackMethod"))

    def _status_params(self, call: SimCall) -> dict[str, str]:
        params = base_params(call)
        params.update(
            CallStatus=call.status,
            CallbackSource="call-progress-events",
            SequenceNumber=str(call.sequence),
            Timestamp=rfc2822(datetime.now(UTC)),
        )
        call.sequence += 1
        if call.answered_by:
            params["AnsweredBy"] = call.answered_by
        return params

    async def _finish(
        self, call: SimCall, status: str, duration: int, deferred: list[dict[str, str]]
    ) -> None:
        call.duration = duration
        self.sim.transition(call, status)
        url = call.param("StatusCallback")
        if not url:
            return
        method = call.param("StatusCallbackMethod")
        params = self._status_params(call)
        params["CallDuration"] = str(duration)
        await self._send(call, "status", url, params, method)
        if self.sim.rng.random() < self.sim.duplicate_final:
            await self._send(call, "status", url, params, method)
        for late in deferred:
            await self._send(call, "status", url, late, method)

    async def _fetch_twiml(self, call: SimCall, url: str, detection_ms: int | None) -> str | None:
        params = call_params(call)
        if detection_ms is not None:
            params["MachineDetectionDuration"] = str(detection_ms)
        body = await self.sim.delivery.send(call, "twiml", url, params, call.param("Method"))
        call.twiml = body
        return body

    async def _recording(self, call: SimCall, url: str, duration: int) -> None:
        sid = new_sid("RE")
        params = {
            "AccountSid": call.account_sid,
            "CallSid": call.sid,
            "RecordingSid": sid,
            "RecordingUrl": f"{self.sim.base_url}/{API_VERSION}/Accounts/{call.account_sid}/Recordings/{sid}",
            "RecordingStatus": "completed",
            "RecordingDuration": str(duration),
            "RecordingChannels": "1",
            "RecordingSource": "OutboundAPI",
            "RecordingStartTime": rfc2822(call.start_time or datetime.now(UTC)),
            "ErrorCode": "0",
        }
        await self._send(call, "recording", url, params, call.param("RecordingStatusCallbackMethod"))

    async def _send(
        self, call: SimCall, kind: str, url: str, params: dict[str, str], method: str | None
    ) -> None:
        """A droppable callback: lost with probability `drop`, as a flaky network would."""
        drop = self.sim.rng.random() < self.sim.drop
        await self.sim.delivery.send(call, kind, url, params, method, drop=drop)
