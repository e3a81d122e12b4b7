"""A Twilio-compatible carrier simulator (aiohttp).

It serves the REST subset the daemon uses (create, fetch, list and update a Call under
`/2010-04-01/Accounts/{AccountSid}/`) and plays the status callbacks Twilio would, as
real signed HTTP POSTs. twilio-python talks to it unchanged when `twilio.api_base_url`
points here. Tests and benchmarks steer it through the `Simulator` object: outcome mix,
per-number scripts, REST failures, callback faults, and records of everything it did.

Waits are simulated seconds multiplied by `time_scale`; durations reported to the
client (CallDuration, duration) are the simulated seconds, timestamps are wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import random
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import structlog
from aiohttp import web
from twilio.request_validator import RequestValidator

from dialer.carrier import FINAL_TWILIO_STATUSES
from dialer.config import SimulatorSettings

if TYPE_CHECKING:
    from dialer.config import Settings

log = structlog.get_logger(__name__)

SIMULATOR_ACCOUNT_SID = "AC" + "0" * 32
SIMULATOR_AUTH_TOKEN = "simulator-auth-token"  # noqa: S105 - a public default for a local fake
API_VERSION = "2010-04-01"
OUTCOMES = ("answered", "busy", "no-answer", "failed", "machine")

_E164 = re.compile(r"\+[1-9]\d{6,14}")
# Which StatusCallbackEvent name asks for which CallStatus.
_EVENT_OF = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}
_ERROR_MESSAGES = {
    400: "Bad request",
    401: "Authenticate",
    404: "The requested resource was not found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_CODE_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21201: "No 'To' number is specified",
    21205: "Url parameter is required.",
    21210: "The source phone number provided is not yet verified for your account.",
    21211: "The 'To' number is not a valid phone number.",
    21213: "No 'From' number is specified",
    21214: "'To' phone number cannot be reached",
    21215: "Geo Permission configuration is not permitting call",
    21217: "Phone number does not appear to be valid",
    21610: "Attempt to send to unsubscribed recipient",
}


def rfc2822(moment: datetime) -> str:
    """A UTC datetime the way Twilio writes it: `Tue, 31 Aug 2010 20:36:28 +0000`."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def _new_sid(prefix: str) -> str:
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


def _first(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _parse_time_filter(raw: str) -> datetime | None:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


class Simulator:
    """State and behaviour of one simulated Twilio account.

    Knobs (plain attributes, changeable while running): `instant`, `duplicate_final`,
    `reorder`, `drop` (probabilities), `hang_seconds`, `hold_create_responses` (Gate)."""

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        account_sid: str,
        auth_token: str,
        instant: bool = False,
        duplicate_final: float = 0.0,
        reorder: float = 0.0,
        drop: float = 0.0,
        hang_seconds: float = 60.0,
        callback_attempts: int = 3,
        callback_timeout_seconds: float = 5.0,
    ) -> None:
        self.settings = settings
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._validator = RequestValidator(auth_token)
        self.instant = instant
        self.duplicate_final = duplicate_final
        self.reorder = reorder
        self.drop = drop
        self.hang_seconds = hang_seconds
        self.callback_attempts = max(1, callback_attempts)
        self.callback_timeout_seconds = callback_timeout_seconds
        self.hold_create_responses = Gate()
        self.rng = random.Random(settings.seed)  # noqa: S311 - simulation, not security
        self.base_url = ""  # set once serving; used in resource URIs
        self.calls: list[SimCall] = []
        self._by_sid: dict[str, SimCall] = {}
        self._scripts: dict[str, list[str]] = {}
        self._create_times: list[float] = []
        self.live = 0
        self.max_concurrent = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        self._call_created = asyncio.Event()

    # ---- control surface -------------------------------------------------------------

    def script(self, number: str, outcomes: list[str]) -> None:
        """Outcomes for the next calls to `number`, one per create; the last repeats.

        Call outcomes: answered, busy, no-answer, failed, machine. REST outcomes:
        `error:STATUS[:CODE]`, `hang` (no call, no response before `hang_seconds`),
        `accept-then-hang[:OUTCOME]` (the call is created and plays OUTCOME, default
        answered, but the response is held for `hang_seconds`)."""
        if not outcomes:
            raise ValueError("script needs at least one outcome")
        self._scripts[number] = list(outcomes)

    def dials_to(self, number: str) -> int:
        """How many calls were created to `number` (REST errors and hangs excluded)."""
        return sum(1 for c in self.calls if c.to == number)

    def create_times(self) -> list[float]:
        """Monotonic arrival times of every authenticated create request."""
        return list(self._create_times)

    def call(self, sid: str) -> SimCall:
        """The record of call `sid` (KeyError if unknown)."""
        return self._by_sid[sid]

    async def wait_for_calls(self, count: int, within: float = 10.0) -> None:
        """Wait until at least `count` calls have been created (TimeoutError otherwise)."""
        async with asyncio.timeout(within):
            while len(self.calls) < count:
                self._call_created.clear()
                await self._call_created.wait()

    async def wait_idle(self, within: float = 10.0) -> None:
        """Wait until every created call has ended and its callbacks are sent."""
        async with asyncio.timeout(within):
            for call in list(self.calls):
                await call.done.wait()

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session callbacks are sent with (inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.callback_timeout_seconds)
            )

    async def close(self) -> None:
        """Stop every call and held response, then close the callback session."""
        self._closing.set()
        self.hold_create_responses.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def app(self) -> web.Application:
        """The aiohttp application serving Twilio's paths."""
        app = web.Application()
        base = f"/{API_VERSION}/Accounts/{{account}}"
        app.router.add_post(f"{base}/Calls.json", self._handle_create)
        app.router.add_get(f"{base}/Calls.json", self._handle_list)
        app.router.add_get(f"{base}/Calls/{{sid}}.json", self._handle_fetch)
        app.router.add_post(f"{base}/Calls/{{sid}}.json", self._handle_update)
        return app

    # ---- time --------------------------------------------------------------------------

    def _scaled(self, seconds: float) -> float:
        return 0.0 if self.instant else seconds * self.settings.time_scale

    def _latency(self) -> float:
        low, high = sorted((self.settings.min_latency_ms, self.settings.max_latency_ms))
        return self._scaled(self.rng.uniform(low, high) / 1000)

    def _call_seconds(self, time_limit: int) -> int:
        if self.instant:
            return 0
        low, high = sorted((self.settings.min_duration_seconds, self.settings.max_duration_seconds))
        return min(self.rng.randint(low, high), time_limit)

    async def _until_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _or_closing(self, waiter: Awaitable[Any]) -> None:
        closing = asyncio.ensure_future(self._closing.wait())
        other = asyncio.ensure_future(waiter)
        try:
            await asyncio.wait({closing, other}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (closing, other):
                task.cancel()

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

    # ---- REST --------------------------------------------------------------------------

    def _error(self, status: int, code: int | None = None, message: str | None = None) -> web.Response:
        code = code or {401: 20003, 404: 20404, 429: 20429}.get(status, 20000 + status)
        body = {
            "code": code,
            "message": message or _CODE_MESSAGES.get(code) or _ERROR_MESSAGES.get(status, "Error"),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return web.json_response(body, status=status)

    def _authorized(self, request: web.Request) -> web.Response | None:
        """None if the request carries this account's credentials, else the error to send."""
        header = request.headers.get("Authorization", "")
        try:
            auth = aiohttp.BasicAuth.decode(header) if header else None
        except ValueError:
            auth = None
        if (
            auth is None
            or not hmac.compare_digest(auth.login.encode(), self.account_sid.encode())
            or not hmac.compare_digest(auth.password.encode(), self._auth_token.encode())
        ):
            return self._error(401, 20003)
        if request.match_info["account"] != self.account_sid:
            return self._error(404, 20404)
        return None

    def _uri(self, call: SimCall) -> str:
        return f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}.json"

    def resource(self, call: SimCall) -> dict[str, Any]:
        """The call as Twilio's JSON resource."""
        final = call.status in FINAL_TWILIO_STATUSES
        base = self._uri(call).removesuffix(".json")
        return {
            "sid": call.sid,
            "account_sid": call.account_sid,
            "api_version": API_VERSION,
            "annotation": None,
            "answered_by": call.answered_by,
            "caller_name": None,
            "date_created": rfc2822(call.created_wall),
            "date_updated": rfc2822(datetime.now(UTC)),
            "direction": "outbound-api",
            "duration": str(call.duration or 0) if final else None,
            "end_time": rfc2822(call.end_time) if call.end_time else None,
            "forwarded_from": None,
            "from": call.from_,
            "from_formatted": call.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "start_time": rfc2822(call.start_time) if call.start_time else None,
            "status": call.status,
            "subresource_uris": {
                "notifications": f"{base}/Notifications.json",
                "recordings": f"{base}/Recordings.json",
                "events": f"{base}/Events.json",
            },
            "to": call.to,
            "to_formatted": call.to,
            "trunk_sid": None,
            "uri": self._uri(call),
        }

    def _next_outcome(self, number: str) -> str:
        script = self._scripts.get(number)
        if script:
            return script.pop(0) if len(script) > 1 else script[0]
        s = self.settings
        weights = [s.answered, s.busy, s.no_answer, s.failed, s.machine]
        if sum(weights) <= 0:
            return "answered"
        return self.rng.choices(OUTCOMES, weights=weights)[0]

    async def _handle_create(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        self._create_times.append(time.monotonic())
        raw = await request.post()
        form = {key: [str(v) for v in raw.getall(key)] for key in set(raw.keys())}
        to, from_ = _first(form, "To"), _first(form, "From")
        if not to:
            return self._error(400, 21201)
        if not from_:
            return self._error(400, 21213)
        if not _first(form, "Url") and not _first(form, "Twiml"):
            return self._error(400, 21205)
        if not _E164.fullmatch(to):
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        outcome = self._next_outcome(to)
        latency = self._latency()
        if outcome.startswith("error:"):
            parts = outcome.split(":")
            await self._until_closing(latency)
            return self._error(int(parts[1]), int(parts[2]) if len(parts) > 2 else None)
        if outcome == "hang":
            await self._until_closing(self.hang_seconds)
            return self._error(503)
        hang = outcome.startswith("accept-then-hang")
        if hang:
            outcome = outcome.partition(":")[2] or "answered"
        if outcome not in OUTCOMES:
            return self._error(400, 20001, f"simulator: unknown scripted outcome {outcome!r}")
        call = self._create_call(to, from_, form, outcome, latency)
        # Twilio answers with the call as created (queued), whatever happened since.
        created = self.resource(call)
        await self._until_closing(self.hang_seconds if hang else latency)
        await self._or_closing(self.hold_create_responses.wait_released())
        return web.json_response(created, status=201)

    def _create_call(
        self, to: str, from_: str, form: dict[str, list[str]], outcome: str, latency: float
    ) -> SimCall:
        call = SimCall(
            sid=_new_sid("CA"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            params=form,
            outcome=outcome,
            created_at=time.monotonic(),
            created_wall=datetime.now(UTC),
        )
        if twiml := call.param("Twiml"):
            call.twiml = twiml
        self.calls.append(call)
        self._by_sid[call.sid] = call
        self._call_created.set()
        self.live += 1
        self.max_concurrent = max(self.max_concurrent, self.live)
        log.debug("sim_call_created", call_sid=call.sid, outcome=outcome)
        task = asyncio.create_task(self._lifecycle(call, latency))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call

    def _known_call(self, request: web.Request) -> SimCall | web.Response:
        """The call a /Calls/{Sid}.json request names, or the error response Twilio
        would give (401 without valid credentials, 404 for an unknown sid)."""
        denied = self._authorized(request)
        if denied is not None:
            return denied
        call = self._by_sid.get(request.match_info["sid"])
        return call if call is not None else self._error(404, 20404)

    async def _handle_fetch(self, request: web.Request) -> web.Response:
        call = self._known_call(request)
        if isinstance(call, web.Response):
            return call
        return web.json_response(self.resource(call))

    async def _handle_update(self, request: web.Request) -> web.Response:
        call = self._known_call(request)
        if isinstance(call, web.Response):
            return call
        form = await request.post()
        status = str(form.get("Status") or "")
        if status not in ("completed", "canceled"):
            return self._error(400, 20001, "simulator: only Status=completed|canceled is supported")
        # Twilio ignores cancel on an answered call and any hang-up on a finished one.
        if not call.final.is_set() and not (status == "canceled" and call.status == "in-progress"):
            call.hangup_status = status
            call.hangup_requested.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._or_closing(call.final.wait())
        return web.json_response(self.resource(call))

    async def _handle_list(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied is not None:
            return denied
        q = request.query
        calls = sorted(self.calls, key=lambda c: c.created_at, reverse=True)
        if to := q.get("To"):
            calls = [c for c in calls if c.to == to]
        if from_ := q.get("From"):
            calls = [c for c in calls if c.from_ == from_]
        if status := q.get("Status"):
            calls = [c for c in calls if c.status == status]
        calls = self._filter_start_time(calls, q)
        try:
            size = max(1, min(1000, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
        except ValueError:
            return self._error(400, 20001, "PageSize and Page must be integers")
        chunk = calls[page * size : (page + 1) * size]
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls.json"
        kept = {k: v for k, v in q.items() if k not in ("Page", "PageSize", "PageToken")}

        def page_uri(n: int) -> str:
            return f"{path}?{urlencode({**kept, 'PageSize': size, 'Page': n})}"

        more = (page + 1) * size < len(calls)
        body = {
            "calls": [self.resource(c) for c in chunk],
            "start": page * size,
            "end": page * size + max(0, len(chunk) - 1),
            "page": page,
            "page_size": size,
            "uri": page_uri(page),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if more else None,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        }
        return web.json_response(body)

    @staticmethod
    def _filter_start_time(calls: list[SimCall], q: Mapping[str, str]) -> list[SimCall]:
        # twilio-python sends start_time_after/_before/start_time as `StartTime>`,
        # `StartTime<` and `StartTime`; a bare date means the whole day, as on Twilio.
        # A call not yet dialed has no start_time and matches no StartTime filter.
        after = _parse_time_filter(q.get("StartTime>", ""))
        before = _parse_time_filter(q.get("StartTime<", ""))
        if before is not None and len(q["StartTime<"]) == 10:
            before = datetime.combine(before.date(), datetime.max.time(), UTC)
        on = _parse_time_filter(q.get("StartTime", ""))

        def keep(call: SimCall) -> bool:
            t = call.start_time
            if after is None and before is None and on is None:
                return True
            if t is None:
                return False
            return (
                (after is None or t >= after)
                and (before is None or t <= before)
                and (on is None or t.date() == on.date())
            )

        return [c for c in calls if keep(c)]

    # ---- call progress -----------------------------------------------------------------

    def _transition(self, call: SimCall, status: str) -> None:
        now = datetime.now(UTC)
        call.status = status
        if status == "initiated":
            call.start_time = now
        if status in FINAL_TWILIO_STATUSES and not call.final.is_set():
            call.end_time = now
            call.final.set()
            self.live -= 1

    async def _lifecycle(self, call: SimCall, latency: float) -> None:
        deferred: list[dict[str, str]] = []
        try:
            await self._progress(call, latency, deferred)
        finally:
            if not call.final.is_set():  # cancelled by close(): count it as over
                self._transition(call, "canceled")
            call.done.set()

    async def _progress(self, call: SimCall, latency: float, deferred: list[dict[str, str]]) -> None:
        timeout = int(call.param("Timeout") or 60)
        time_limit = int(call.param("TimeLimit") or 14400)
        s = self.settings
        if await self._pause(call, latency + self._latency()):
            return await self._finish(call, "canceled", 0, deferred)
        self._transition(call, "initiated")
        await self._status_event(call, deferred)
        if call.outcome == "failed":
            await self._pause(call, self._latency())
            return await self._finish(call, "failed", 0, deferred)
        if await self._pause(call, self._latency()):
            return await self._finish(call, "canceled", 0, deferred)
        self._transition(call, "ringing")
        await self._status_event(call, deferred)
        if call.outcome == "busy":
            await self._pause(call, self._latency())
            return await self._finish(call, "busy", 0, deferred)
        if call.outcome == "no-answer":
            if await self._pause(call, self._scaled(timeout)):
                return await self._finish(call, "canceled", 0, deferred)
            return await self._finish(call, "no-answer", 0, deferred)
        ring = self.rng.uniform(1, max(1, min(timeout, 8)))
        if await self._pause(call, self._scaled(ring)):
            return await self._finish(call, "canceled", 0, deferred)
        if call.machine_detection:
            call.answered_by = "machine_start" if call.outcome == "machine" else "human"
        self._transition(call, "in-progress")
        answered_at = time.monotonic()
        if url := call.param("Url"):
            await self._fetch_twiml(call, url)
        await self._status_event(call, deferred)
        planned = self._call_seconds(time_limit)
        if await self._pause(call, self._scaled(planned)):
            elapsed = time.monotonic() - answered_at
            scale = s.time_scale if not self.instant else 1.0
            planned = min(planned, round(elapsed / scale))
        await self._finish(call, "completed", planned, deferred)
        if call.record and (recording_url := call.param("RecordingStatusCallback")):
            await self._recording(call, recording_url, planned)
        return None

    def _base_params(self, call: SimCall) -> dict[str, str]:
        return {
            "AccountSid": call.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
        }

    async def _status_event(self, call: SimCall, deferred: list[dict[str, str]]) -> None:
        """Send the callback for the call's new (non-final) status, if it was asked for."""
        url = call.param("StatusCallback")
        wanted = {e.lower() for e in call.params.get("StatusCallbackEvent", [])}
        if not url or _EVENT_OF.get(call.status) not in wanted:
            return
        params = self._status_params(call)
        if self.rng.random() < self.reorder:
            deferred.append(params)  # sent after the final one, out of order
            return
        await self._deliver(call, "status", url, params, call.param("StatusCallbackMethod"))

    def _status_params(self, call: SimCall) -> dict[str, str]:
        params = self._base_params(call)
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
        self._transition(call, status)
        url = call.param("StatusCallback")
        if not url:
            return
        method = call.param("StatusCallbackMethod")
        params = self._status_params(call)
        params["CallDuration"] = str(duration)
        await self._deliver(call, "status", url, params, method)
        if self.rng.random() < self.duplicate_final:
            await self._deliver(call, "status", url, params, method)
        for late in deferred:
            await self._deliver(call, "status", url, late, method)

    async def _fetch_twiml(self, call: SimCall, url: str) -> None:
        params = self._base_params(call)
        params["CallStatus"] = call.status
        if call.answered_by:
            params["AnsweredBy"] = call.answered_by
        body = await self._deliver(call, "twiml", url, params, call.param("Method"), droppable=False)
        call.twiml = body

    async def _recording(self, call: SimCall, url: str, duration: int) -> None:
        sid = _new_sid("RE")
        params = {
            "AccountSid": call.account_sid,
            "CallSid": call.sid,
            "RecordingSid": sid,
            "RecordingUrl": f"{self.base_url}/{API_VERSION}/Accounts/{call.account_sid}/Recordings/{sid}",
            "RecordingStatus": "completed",
            "RecordingDuration": str(duration),
            "RecordingChannels": "1",
            "RecordingSource": "OutboundAPI",
            "RecordingStartTime": rfc2822(call.start_time or datetime.now(UTC)),
            "ErrorCode": "0",
        }
        await self._deliver(call, "recording", url, params, call.param("RecordingStatusCallbackMethod"))

    async def _deliver(
        self,
        call: SimCall,
        kind: str,
        url: str,
        params: dict[str, str],
        method: str | None,
        *,
        droppable: bool = True,
    ) -> str | None:
        """Send one signed webhook, retrying a few times; returns the body if delivered."""
        record = CallbackRecord(kind=kind, url=url, params=dict(params), at=time.monotonic())
        call.callbacks.append(record)
        if droppable and self.rng.random() < self.drop:
            record.dropped = True
            log.debug("callback_dropped", call_sid=call.sid, kind=kind)
            return None
        assert self._session is not None, "Simulator.start() was not awaited"
        if (method or "POST").upper() == "GET":
            target = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
            data: dict[str, str] | None = None
            signature = self._validator.compute_signature(target, {})
        else:
            target, data = url, params
            signature = self._validator.compute_signature(url, params)
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"}
        for attempt in range(self.callback_attempts):
            if attempt:
                await asyncio.sleep(0.05 * 2 ** (attempt - 1))  # Twilio-like short backoff
            record.attempts += 1
            try:
                async with self._session.request(
                    (method or "POST").upper(), target, data=data, headers=headers
                ) as response:
                    body = await response.text()
                    record.http_status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                record.error = type(exc).__name__
                continue
            if 200 <= response.status < 300:
                record.delivered = True
                log.debug("callback_sent", call_sid=call.sid, kind=kind, status=params.get("CallStatus"))
                return body
        log.info(
            "callback_failed",
            call_sid=call.sid,
            kind=kind,
            http_status=record.http_status,
            error=record.error,
            attempts=record.attempts,
        )
        return None


@dataclass
class RunningSimulator:
    """A simulator serving on a port: `url` is the base URL for twilio.api_base_url."""

    url: str
    simulator: Simulator
    _runner: web.AppRunner

    async def stop(self) -> None:
        """Stop all calls and the HTTP server."""
        await self.simulator.close()
        await self._runner.cleanup()


async def start_simulator(
    settings: SimulatorSettings,
    *,
    account_sid: str,
    auth_token: str,
    host: str = "127.0.0.1",
    port: int = 0,
    instant: bool = False,
    duplicate_final: float = 0.0,
    reorder: float = 0.0,
    drop: float = 0.0,
    hang_seconds: float = 60.0,
) -> RunningSimulator:
    """Serve a new Simulator on host:port (0 = any free port) and return it running."""
    simulator = Simulator(
        settings,
        account_sid=account_sid,
        auth_token=auth_token,
        instant=instant,
        duplicate_final=duplicate_final,
        reorder=reorder,
        drop=drop,
        hang_seconds=hang_seconds,
    )
    await simulator.start()
    # Held and hanging handlers return as soon as the simulator closes, so a short
    # shutdown timeout only cuts off clients that stopped reading.
    runner = web.AppRunner(simulator.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
    simulator.base_url = url
    log.info("simulator_started", url=url, account_sid=account_sid)
    return RunningSimulator(url=url, simulator=simulator, _runner=runner)


async def _serve(settings: Settings, host: str, port: int) -> None:
    running = await start_simulator(
        settings.simulator,
        account_sid=settings.twilio.account_sid or SIMULATOR_ACCOUNT_SID,
        auth_token=settings.twilio.auth_token.get_secret_value() or SIMULATOR_AUTH_TOKEN,
        host=host,
        port=port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"simulator listening on {running.url} (set twilio.api_base_url to it)", flush=True)
    try:
        await stop.wait()
    finally:
        await running.stop()


def _run(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(_serve(settings, args.host, args.port))
    return 0


def register_cli(sub: Any) -> None:
    """Add `dialer simulator [--host H] [--port N]` to the CLI's subparsers."""
    p = sub.add_parser("simulator", help="serve the Twilio-compatible carrier simulator")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8089, help="port to listen on (default 8089)")
    p.set_defaults(handler=_run)
