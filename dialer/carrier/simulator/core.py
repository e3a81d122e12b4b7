"""The `Simulator`: the state of one simulated Twilio account, the knobs tests turn,
the simulated clock, and the wiring of its REST server and call progress."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from dialer.carrier import FINAL_TWILIO_STATUSES
from dialer.carrier.simulator.callee import Callee, parse_callee
from dialer.carrier.simulator.delivery import Delivery
from dialer.carrier.simulator.progress import CallProgress
from dialer.carrier.simulator.records import OUTCOMES, Gate, SimCall, new_sid
from dialer.carrier.simulator.rest import RestApi, resource
from dialer.config import SimulatorSettings
from dialer.loopback import is_loopback_host

log = structlog.get_logger(__name__)


def check_outcome(spec: str) -> None:
    """ValueError naming `spec` unless it is a scripted outcome `Simulator.script` takes."""
    if spec in OUTCOMES or spec == "hang":
        return
    if spec.startswith("error:"):
        parts = spec.split(":")
        if len(parts) in (2, 3) and all(p.isdigit() for p in parts[1:]):
            return
        raise ValueError(f"outcome {spec!r}: expected error:STATUS[:CODE] with numbers")
    if spec.startswith("accept-then-hang"):
        rest = spec.removeprefix("accept-then-hang")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"outcome {spec!r}: expected accept-then-hang[:OUTCOME]")
            try:
                check_outcome(rest[1:])
            except ValueError as exc:
                raise ValueError(f"outcome {spec!r}: {exc}") from None
        return
    parse_callee(spec)


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
        self.auth_token = auth_token
        self.instant = instant
        self.duplicate_final = duplicate_final
        self.reorder = reorder
        self.drop = drop
        self.hang_seconds = hang_seconds
        self.delivery = Delivery(
            auth_token,
            attempts=callback_attempts,
            timeout_seconds=callback_timeout_seconds,
            allow_remote=settings.allow_remote_callbacks,
        )
        self.hold_create_responses = Gate()
        self.rng = random.Random(settings.seed)  # noqa: S311 - simulation, not security
        self.base_url = ""  # set once serving; used in resource URIs
        self.calls: list[SimCall] = []
        self.by_sid: dict[str, SimCall] = {}
        self._scripts: dict[str, list[str]] = {}
        self._mix: tuple[list[Callee], list[float]] | None = None
        self._mix_of: dict[str, float] | None = None
        self._create_times: list[float] = []
        self.live = 0
        self.max_concurrent = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()
        self._call_created = asyncio.Event()
        self._progress = CallProgress(self)

    # ---- control surface -------------------------------------------------------------

    def script(self, number: str, outcomes: Sequence[str | Callee]) -> None:
        """Outcomes for the next calls to `number`, one per create; the last repeats.

        Call outcomes: answered (a callee from the `callees` mix; `listen` by
        default), busy, no-answer, failed, machine (a 10-second greeting), or a callee
        behaviour, as a `Callee` or its spec string (`press:1`, `press:*,1`, `silent`,
        `hangup:5`, `machine:8`; see docs/carrier.md#callees). REST outcomes:
        `error:STATUS[:CODE]`, `hang` (no call, no response before `hang_seconds`),
        `accept-then-hang[:OUTCOME]` (the call is created and plays OUTCOME, default
        answered, but the response is held for `hang_seconds`). A number a `<Dial>`
        calls plays its script too (answered, busy, no-answer or failed).

        ValueError, naming it, for an outcome that is none of these."""
        if not outcomes:
            raise ValueError("script needs at least one outcome")
        specs = [o.spec() if isinstance(o, Callee) else o for o in outcomes]
        for spec in specs:
            check_outcome(spec)
        self._scripts[number] = specs

    def resource(self, call: SimCall) -> dict[str, Any]:
        """The call as Twilio's JSON resource."""
        return resource(call)

    def dials_to(self, number: str) -> int:
        """How many calls were created to `number` (REST errors and hangs excluded)."""
        return sum(1 for c in self.calls if c.to == number)

    def create_times(self) -> list[float]:
        """Monotonic arrival times of every authenticated create request."""
        return list(self._create_times)

    def call(self, sid: str) -> SimCall:
        """The record of call `sid` (KeyError if unknown)."""
        return self.by_sid[sid]

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
        await self.delivery.start()

    async def close(self) -> None:
        """Stop every call and held response, then close the callback session."""
        self.closing.set()
        self.hold_create_responses.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.delivery.close()

    def app(self) -> web.Application:
        """The aiohttp application serving Twilio's paths."""
        app = web.Application()
        RestApi(self).add_routes(app)
        return app

    # ---- time --------------------------------------------------------------------------

    def scaled(self, seconds: float) -> float:
        """Real seconds for `seconds` of simulated time (0 when instant)."""
        return 0.0 if self.instant else seconds * self.settings.time_scale

    def latency(self) -> float:
        """A random network/processing latency, in real seconds."""
        low, high = sorted((self.settings.min_latency_ms, self.settings.max_latency_ms))
        return self.scaled(self.rng.uniform(low, high) / 1000)

    def call_seconds(self, time_limit: int) -> int:
        """A random answered-call duration in simulated seconds, at most `time_limit`."""
        if self.instant:
            return 0
        low, high = sorted((self.settings.min_duration_seconds, self.settings.max_duration_seconds))
        return min(self.rng.randint(low, high), time_limit)

    async def until_closing(self, seconds: float) -> None:
        """Wait `seconds` of real time, or less if the simulator closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)

    async def or_closing(self, waiter: Awaitable[Any]) -> None:
        """Wait for `waiter`, or until the simulator closes."""
        closing = asyncio.ensure_future(self.closing.wait())
        other = asyncio.ensure_future(waiter)
        try:
            await asyncio.wait({closing, other}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (closing, other):
                task.cancel()

    # ---- calls -------------------------------------------------------------------------

    def record_create(self) -> None:
        """Note the arrival of an authenticated create request."""
        self._create_times.append(time.monotonic())

    def next_outcome(self, number: str) -> str:
        """The scripted outcome for the next call to `number`, or one drawn from the mix."""
        script = self._scripts.get(number)
        if script:
            return script.pop(0) if len(script) > 1 else script[0]
        s = self.settings
        weights = [s.answered, s.busy, s.no_answer, s.failed, s.machine]
        if sum(weights) <= 0:
            return "answered"
        return self.rng.choices(OUTCOMES, weights=weights)[0]

    def callee_of(self, outcome: str) -> tuple[str, Callee | None]:
        """(call outcome, who picks up) for a scripted or drawn outcome; ValueError if
        it is neither a call outcome nor a callee spec."""
        if outcome in ("busy", "no-answer", "failed"):
            return outcome, None
        if outcome == "answered":
            return outcome, self._draw_callee()
        if outcome == "machine":
            return outcome, Callee.machine()
        callee = parse_callee(outcome)
        return ("machine" if callee.is_machine else "answered"), callee

    def _draw_callee(self) -> Callee:
        mix = self.settings.callees
        if not mix:
            return Callee.listen()  # no draw: seeded runs stay as they were
        if self._mix is None or self._mix_of is not mix:
            self._mix = ([parse_callee(spec) for spec in mix], list(mix.values()))
            self._mix_of = mix
        callees, weights = self._mix
        if sum(weights) <= 0:
            return Callee.listen()
        return self.rng.choices(callees, weights=weights)[0]

    def leg_outcome(self, number: str) -> str:
        """What a number a `<Dial>` calls does: its scripted outcome, else answered."""
        if number not in self._scripts:
            return "answered"
        outcome = self.next_outcome(number)
        with contextlib.suppress(ValueError):
            return self.callee_of(outcome)[0]
        return "failed"  # a REST outcome (error:…, hang): the leg cannot be placed

    def create_call(
        self,
        to: str,
        from_: str,
        form: dict[str, list[str]],
        outcome: str,
        latency: float,
        *,
        callee: Callee | None = None,
    ) -> SimCall:
        """Record a new call and start playing its progress."""
        call = SimCall(
            sid=new_sid("CA"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            params=form,
            outcome=outcome,
            created_at=time.monotonic(),
            created_wall=datetime.now(UTC),
            callee=callee,
        )
        if twiml := call.param("Twiml"):
            call.twiml = twiml
        self.calls.append(call)
        self.by_sid[call.sid] = call
        self._call_created.set()
        self.live += 1
        self.max_concurrent = max(self.max_concurrent, self.live)
        log.debug("sim_call_created", call_sid=call.sid, outcome=outcome)
        task = asyncio.create_task(self._progress.run(call, latency))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call

    def transition(self, call: SimCall, status: str) -> None:
        """Move `call` to `status`, stamping its start and end times."""
        now = datetime.now(UTC)
        call.status = status
        if status == "initiated":
            call.start_time = now
        if status in FINAL_TWILIO_STATUSES and not call.final.is_set():
            call.end_time = now
            call.final.set()
            self.live -= 1


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
    if not is_loopback_host(host):
        # Its credentials are in the documentation: anyone who can reach it can place
        # "calls" and read every call's details.
        log.warning("simulator_listening_beyond_loopback", host=host, url=url)
    return RunningSimulator(url=url, simulator=simulator, _runner=runner)
