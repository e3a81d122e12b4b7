"""Serving the webhook app for tests: real HTTP on loopback, requests signed exactly
as Twilio signs them, and a fake store that records what the app hands over. Used by
the unit tests of the app (tests/unit/test_webhooks_app.py) and, in front of the real
store, by the integration tests of webhooks, the HTTP guard and the reverse proxy."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from twilio.request_validator import RequestValidator

from dialer.database import translate_errors
from dialer.logs import configure_logging
from dialer.metrics import Metrics
from dialer.models import ApplyResult, CallEvent
from dialer.webhooks import CallbackStore, WebhookDeps, bound_port, create_app, serve

TOKEN = "test-auth-token-5f0c1d2e3a4b"
PUBLIC_URL = "https://dialer.example.com"
STAMP = "Wed, 25 Nov 2026 19:26:17 +0000"


@dataclass
class FakeStore:
    """Records what the webhooks hand over; answers `result` or raises `error`, through
    the same error boundary as the real store (a driver error leaves it translated)."""

    result: ApplyResult = ApplyResult.APPLIED
    error: BaseException | None = None
    delay: float = 0.0
    events: list[tuple[uuid.UUID | None, CallEvent]] = field(default_factory=list)
    recordings: list[tuple[uuid.UUID | None, str, str]] = field(default_factory=list)

    @translate_errors
    async def apply_call_event(self, call_id: uuid.UUID | None, event: CallEvent) -> ApplyResult:
        """Record the event."""
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.events.append((call_id, event))
        return self.result

    @translate_errors
    async def record_recording(self, call_id: uuid.UUID | None, call_sid: str, recording_url: str) -> ApplyResult:
        """Record the recording."""
        if self.error is not None:
            raise self.error
        self.recordings.append((call_id, call_sid, recording_url))
        return self.result


def sign(path_qs: str, params: Mapping[str, str] | None = None, *, public_url: str = PUBLIC_URL) -> str:
    """The X-Twilio-Signature Twilio would send for this URL and form."""
    return str(RequestValidator(TOKEN).compute_signature(public_url + path_qs, dict(params or {})))


@dataclass
class Reply:
    """What the client saw."""

    status: int
    text: str
    content_type: str


@dataclass
class Server:
    """One running webhook app and a client session to it."""

    base: str
    session: aiohttp.ClientSession
    deps: WebhookDeps

    async def request(
        self,
        method: str,
        path_qs: str,
        *,
        form: Mapping[str, str] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        signature: str | None = None,
        signed: bool = True,
    ) -> Reply:
        """Send one request; signed for `form` (at PUBLIC_URL) unless told otherwise."""
        all_headers = dict(headers or {})
        if signature is not None:
            all_headers["X-Twilio-Signature"] = signature
        elif signed:
            all_headers["X-Twilio-Signature"] = sign(path_qs, form)
        async with self.session.request(
            method, self.base + path_qs, data=form if data is None else data, headers=all_headers
        ) as resp:
            return Reply(resp.status, await resp.text(), resp.headers.get("Content-Type", ""))

    async def post(self, path_qs: str, form: Mapping[str, str] | None = None, **kw: Any) -> Reply:
        """POST a form."""
        return await self.request("POST", path_qs, form=form, **kw)

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """One sample of this app's metrics registry (0 when absent)."""
        value = self.deps.metrics.registry.get_sample_value(name, dict(labels or {}))
        return float(value or 0.0)


async def _ready() -> bool:
    return True


async def _no_twiml(call_id: uuid.UUID, answered_by: str | None) -> str | None:
    return None


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    """Start webhook apps on loopback port 0; everything is stopped after the test."""
    async with AsyncExitStack() as stack:

        async def make(
            store: CallbackStore | None = None,
            *,
            public_url: str = PUBLIC_URL,
            max_body_bytes: int = 64 * 1024,
            is_ready: Callable[[], Awaitable[bool]] = _ready,
            render_twiml: Callable[[uuid.UUID, str | None], Awaitable[str | None]] = _no_twiml,
            intercept: Callable[[uuid.UUID | None, CallEvent], bool] | None = None,
            store_timeout_seconds: float = 10.0,
        ) -> Server:
            deps = WebhookDeps(
                store=store if store is not None else FakeStore(),
                auth_token=TOKEN,
                public_url=public_url,
                metrics=Metrics(),
                max_body_bytes=max_body_bytes,
                is_ready=is_ready,
                render_twiml=render_twiml,
                intercept=intercept,
                store_timeout_seconds=store_timeout_seconds,
            )
            runner = await serve(create_app(deps), "127.0.0.1", 0)
            stack.push_async_callback(runner.cleanup)
            session = await stack.enter_async_context(aiohttp.ClientSession())
            return Server(f"http://127.0.0.1:{bound_port(runner)}", session, deps)

        yield make


def status_form(sid: str = "CA00000000000000000000000000000001", status: str = "completed", **extra: str) -> dict[str, str]:
    """A status callback form as Twilio sends it."""
    form = {
        "AccountSid": "AC00000000000000000000000000000000",
        "CallSid": sid,
        "CallStatus": status,
        "To": "+34911234567",
        "From": "+34910000000",
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
        "Timestamp": STAMP,
        "SequenceNumber": "0",
    }
    form.update(extra)
    return form


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """JSON log lines written during the test (structlog reset afterwards)."""
    out = io.StringIO()
    configure_logging("debug", "json", secrets=[TOKEN], stream=out)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    structlog.reset_defaults()
