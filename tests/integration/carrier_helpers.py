"""Shared pieces for the carrier tests: a loopback webhook receiver and fast settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from dialer.carrier.simulator import RunningSimulator, start_simulator
from dialer.config import SimulatorSettings

ACCOUNT = "AC" + "a1" * 16
TOKEN = "test-auth-token-123"
FROM = "+34910000000"

# Milliseconds of real time per call, whatever the outcome.
FAST = SimulatorSettings(
    seed=11,
    time_scale=0.001,
    min_latency_ms=1,
    max_latency_ms=5,
    min_duration_seconds=1,
    max_duration_seconds=5,
)


@dataclass
class Hit:
    """One request the receiver got."""

    path: str
    url: str
    params: dict[str, str]
    signature: str | None


@dataclass
class Receiver:
    """A webhook endpoint on loopback recording everything the simulator sends."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    flaky_seen: set[str] = field(default_factory=set)
    twiml_body: str = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>from url</Say></Response>'

    def at(self, path: str) -> list[Hit]:
        """Hits on one path, in arrival order."""
        return [h for h in self.hits if h.path == path]

    def statuses(self, path: str = "/status", sid: str | None = None) -> list[str]:
        """CallStatus values received on `path` (for one call if `sid`), in order."""
        return [h.params["CallStatus"] for h in self.at(path) if sid is None or h.params["CallSid"] == sid]

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        hit = Hit(request.path, self.url + request.path_qs, params, request.headers.get("X-Twilio-Signature"))
        self.hits.append(hit)
        if request.path == "/broken":
            return web.Response(status=500)
        if request.path == "/flaky":
            key = params.get("CallSid", "") + params.get("SequenceNumber", "")
            if key not in self.flaky_seen:
                self.flaky_seen.add(key)
                return web.Response(status=503)
        if request.path == "/twiml":
            return web.Response(text=self.twiml_body, content_type="application/xml")
        return web.Response(text="ok")


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    """Serve a Receiver on an ephemeral loopback port."""
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec._handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()


@pytest.fixture
async def rec() -> AsyncIterator[Receiver]:
    """A loopback webhook receiver."""
    async with receiver() as r:
        yield r


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """A fast simulator on an ephemeral port, with this module's account and token."""
    running = await start_simulator(FAST, account_sid=ACCOUNT, auth_token=TOKEN, hang_seconds=5)
    yield running
    await running.stop()
