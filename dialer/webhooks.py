"""The HTTP boundary (docs/webhooks.md): Twilio's signed status, recording and TwiML callbacks,
and the operational endpoints `/healthz`, `/readyz`, `/metrics`.

This module authenticates, bounds and parses requests, then hands one `CallEvent` to
a `CallbackStore`, which applies it in a single transaction. It writes no SQL itself.

Every `/twilio/*` request goes through the same gate, in this order:

1. size: a declared or actual body above `max_body_bytes` → 413 (cheapest rejection);
2. signature: `X-Twilio-Signature` checked against `public_url + raw path` → 403;
3. shape: form encoding and the required fields → 400.

So nothing unsigned is ever parsed beyond the form decoding the signature needs, and
nothing unsigned can change a row (docs/invariants.md#6).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

import structlog
from aiohttp import web
from multidict import MultiDict
from structlog.typing import FilteringBoundLogger
from twilio.request_validator import RequestValidator

from dialer.carrier import FINAL_TWILIO_STATUSES
from dialer.errors import DatabaseUnavailable, DialerError
from dialer.http_limits import HttpGuard, default_guard
from dialer.menu import KEYS
from dialer.metrics import CONTENT_TYPE_LATEST, Counter, Metrics
from dialer.models import ApplyResult, CallEvent, KeyAnswer, KeyPress
from dialer.signatures import SignatureChecker

__all__ = [
    "DEPS_KEY",
    "EMPTY_TWIML",
    "CallbackStore",
    "MalformedCallback",
    "WebhookDeps",
    "bound_port",
    "call_event_from_form",
    "create_app",
    "create_metrics_app",
    "key_press_from",
    "parse_twilio_timestamp",
    "serve",
]

log = structlog.get_logger("dialer.webhooks")

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
# Twilio reads nothing from a status callback's body; an empty TwiML document is the
# most neutral 2xx answer and is also valid should a callback URL be reused as a voice URL.
EMPTY_TWIML: Final = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# What a key press for no call of ours hears: the end.
EMPTY_HANGUP: Final = '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'
# The store's columns (calls.call_sid, calls.recording_url) are varchar(255): a longer
# value could never be stored, and answering 503 for it would make Twilio retry forever.
MAX_FIELD_CHARS: Final = 255
# A form field count cap: a real Twilio callback carries about 20.
MAX_FORM_FIELDS: Final = 200
# Numeric fields land in `integer` columns; a signed value outside them is refused
# (400) rather than failing in the database as a 503 the carrier would retry forever.
INT32_MAX: Final = 2**31 - 1
# A Timestamp before this, or more than TIMESTAMP_SKEW ahead of our clock, is not a
# moment of a real call (and a far-future one would push its retry out of reach).
EARLIEST_TIMESTAMP: Final = datetime(2000, 1, 1)
TIMESTAMP_SKEW: Final = timedelta(days=1)
READY_TIMEOUT_SECONDS: Final = 2.0
# Errors of the database path: answered 503, so a carrier that retries (the simulator, Twilio
# with connection overrides) tries again; reconciliation (docs/architecture.md) catches the rest.
# The store raises DatabaseUnavailable for every database failure (dialer/database.py);
# TimeoutError is the store call outliving store_timeout_seconds.
DB_ERRORS: Final = (DatabaseUnavailable, TimeoutError)
# Probes and scrapes are logged at debug level so they do not drown the journal.
_QUIET_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})


class CallbackStore(Protocol):
    """What the webhooks need from the database (`dialer.store.lifecycle.LifecycleStore`).

    Both methods do their whole work in one transaction and are idempotent: a
    duplicate or out-of-order event answers IGNORED and changes nothing. `call_id` is
    None when the callback URL carried no usable id; the store then finds the call by
    its CallSid.
    """

    async def apply_call_event(self, call_id: uuid.UUID | None, event: CallEvent) -> ApplyResult:
        """Apply one status event to its call (row, contact, retry, counters, NOTIFY)."""
        ...

    async def record_recording(
        self, call_id: uuid.UUID | None, call_sid: str, recording_url: str
    ) -> ApplyResult:
        """Store the URL of a completed recording on its call."""
        ...


@dataclass(frozen=True)
class WebhookDeps:
    """Everything the webhook application depends on, injected by the service."""

    store: CallbackStore
    auth_token: str  # validates X-Twilio-Signature
    public_url: str  # the address the carrier sees, e.g. "https://dialer.example.com", no trailing slash
    metrics: Metrics
    max_body_bytes: int
    is_ready: Callable[[], Awaitable[bool]]  # DB pool and LISTEN connection both up
    # The call's document for the carrier's AnsweredBy (None when absent); None when
    # the call is unknown.
    render_twiml: Callable[[uuid.UUID, str | None], Awaitable[str | None]]
    # Engine fast path: True when it absorbed a non-final event for a call it holds
    # locally, so no DB write is needed. Called only for non-final events, before the store.
    intercept: Callable[[uuid.UUID | None, CallEvent], bool] | None = None
    # Records a key press (one statement) and answers it with the next document
    # (twiml.CallRequests.answer_key); None: /twilio/gather answers 404.
    answer_key: Callable[[uuid.UUID, KeyPress], Awaitable[KeyAnswer]] | None = None
    # Lines appended to /readyz's answer (side loops restarted after a crash); they do
    # not change the status code.
    readiness_detail: Callable[[], list[str]] | None = None
    # A store call slower than this answers 503 (Twilio gives up on a callback after 15 s;
    # a 503 lets it retry, while an abandoned connection is simply lost).
    store_timeout_seconds: float = 10.0


DEPS_KEY: Final = web.AppKey("dialer_webhook_deps", WebhookDeps)


class MalformedCallback(DialerError):
    """A signed callback whose content cannot be used (→ 400); the message says why."""


def parse_twilio_timestamp(value: str | None) -> datetime | None:
    """Twilio's RFC 2822 `Timestamp` ("Wed, 25 Nov 2026 19:26:17 +0000") as a naive UTC
    datetime (the schema's `timestamp` columns hold UTC), or None when absent or unreadable."""
    if not value:
        return None
    return _parse_timestamp(value)


# Callbacks arriving together carry the same second: parsed once (3 % of a callback's
# CPU under load went to parsedate_to_datetime). datetimes are immutable, so shared.
@functools.lru_cache(maxsize=1024)
def _parse_timestamp(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000" per RFC 2822: UTC with no known offset
        return parsed
    return parsed.astimezone(UTC).replace(tzinfo=None)


def _optional_int(form: Mapping[str, str], key: str, *, minimum: int | None = None) -> int | None:
    # Unreadable or negative optional numbers never reject a callback: losing a final
    # status over a garbled duration would be worse than recording it without one.
    # A number too large for its column is no garbling but an absurd value: refused.
    raw = form.get(key, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    if abs(value) > INT32_MAX:
        raise MalformedCallback(f"{key} out of range")
    if minimum is not None and value < minimum:
        return None
    return value


def _timestamp(form: Mapping[str, str], now: datetime | None) -> datetime | None:
    stamp = parse_twilio_timestamp(form.get("Timestamp"))
    if stamp is None:
        return None
    latest = (now or datetime.now(UTC).replace(tzinfo=None)) + TIMESTAMP_SKEW
    if not EARLIEST_TIMESTAMP <= stamp <= latest:
        raise MalformedCallback("Timestamp out of range")
    return stamp


def _optional_str(form: Mapping[str, str], key: str) -> str | None:
    value = form.get(key, "").strip()
    _storable(key, value)
    return value or None


def _required(form: Mapping[str, str], key: str) -> str:
    value = form.get(key, "").strip()
    if not value:
        raise MalformedCallback(f"missing {key}")
    if len(value) > MAX_FIELD_CHARS:
        raise MalformedCallback(f"{key} longer than {MAX_FIELD_CHARS} characters")
    _storable(key, value)
    return value


def _storable(key: str, value: str) -> None:
    # PostgreSQL text cannot hold NUL: the database would refuse the row, as a 503.
    if "\x00" in value:
        raise MalformedCallback(f"{key} contains a NUL character")


def call_event_from_form(form: Mapping[str, str], *, now: datetime | None = None) -> CallEvent:
    """Build a CallEvent from the fields of a Twilio call status callback.

    CallSid and CallStatus are required (MalformedCallback otherwise); the status is
    kept as Twilio spells it. Optional fields that are absent or unreadable become None;
    numbers beyond 32 bits and a Timestamp outside [2000, `now` + 1 day] (naive UTC,
    default: the wall clock) are MalformedCallback. `end_time` is the callback's
    Timestamp for final statuses, `start_time` for `in-progress` (the moment the call
    was answered).
    """
    call_sid = _required(form, "CallSid")
    status = _required(form, "CallStatus")
    stamp = _timestamp(form, now)
    final = status in FINAL_TWILIO_STATUSES
    return CallEvent(
        call_sid=call_sid,
        status=status,
        duration=_optional_int(form, "CallDuration", minimum=0),
        answered_by=_optional_str(form, "AnsweredBy"),
        error_code=_optional_int(form, "ErrorCode"),
        error_message=_optional_str(form, "ErrorMessage"),
        sequence_number=_optional_int(form, "SequenceNumber", minimum=0),
        timestamp=stamp,
        start_time=stamp if status == "in-progress" else None,
        end_time=stamp if final else None,
    )


# The reading and key count a gather URL carries are small; anything else is not ours.
MAX_GATHER_COUNTER: Final = 1000


def key_press_from(query: Mapping[str, str], form: Mapping[str, str]) -> KeyPress:
    """Build a KeyPress from a <Gather> action request: `read` and `keys` from the
    (signed) query string the daemon wrote, CallSid and one keypad key in Digits from
    the form. MalformedCallback names what is missing or wrong."""
    counters = []
    for name in ("read", "keys"):
        raw = query.get(name, "")
        if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_GATHER_COUNTER:
            raise MalformedCallback(f"query parameter {name} is not a small whole number")
        counters.append(int(raw))
    digit = form.get("Digits", "")
    if len(digit) != 1 or digit not in KEYS:
        raise MalformedCallback("Digits is not one keypad key (0-9, * or #)")
    return KeyPress(call_sid=_required(form, "CallSid"), digit=digit, keys=counters[1], read=counters[0])


# The request's parsed call id, once per request.
_CALL_ID: Final[web.RequestKey[uuid.UUID | None]] = web.RequestKey("dialer_call_id")


def _call_id(request: web.Request) -> uuid.UUID | None:
    """The call id of the request's query (parsed once: the access log and the handler
    both want it). A mangled id is treated as absent: the store can still find the
    call by its CallSid."""
    if _CALL_ID in request:
        return request[_CALL_ID]
    raw = request.query.get("call_id")
    found: uuid.UUID | None
    try:
        found = uuid.UUID(raw) if raw else None
    except ValueError:
        found = None
    request[_CALL_ID] = found
    return found


def _parse_form(request: web.Request, body: bytes) -> MultiDict[str] | None:
    """The form fields of a body, or None when it is not a UTF-8 urlencoded form."""
    if not body:
        return MultiDict()
    if request.content_type != FORM_CONTENT_TYPE or (request.charset or "utf-8").lower() not in (
        "utf-8",
        "utf8",
    ):
        return None
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:  # includes UnicodeDecodeError and too many fields
        return None
    return MultiDict(pairs)


class _Webhooks:
    """The request handlers, bound to one application's dependencies."""

    def __init__(self, deps: WebhookDeps, app_log: FilteringBoundLogger) -> None:
        self.deps = deps
        self.log = app_log  # bound once (create_app): the hot path's debug lines cost a call
        self.signatures = SignatureChecker(RequestValidator(deps.auth_token))
        self._results: dict[str, Any] = {}  # dialer_callbacks_total's child per result

    # -- the gate every /twilio/* request passes ------------------------------------

    async def _admit(self, request: web.Request) -> MultiDict[str] | None:
        """Size, then signature (raising 413 or 403); returns the signed form fields, or
        None when the body is not a usable form (→ 400 wherever a form is needed)."""
        limit = self.deps.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        # GET carries no signed params; any body on it is ignored, unread.
        # read() raises 413 itself past client_max_size (a chunked body has no length).
        body = await request.read() if request.method == "POST" else b""
        form = _parse_form(request, body)
        # An unusable body is checked as if it had no params: a request signed that
        # way is answered 400 below, anything else 403.
        params: MultiDict[str] = form if form is not None else MultiDict()
        if not self._signature_ok(request, params):
            self.deps.metrics.signature_failures.inc()
            log.warning(
                "callback_signature_invalid",
                path=request.path,
                has_signature=SIGNATURE_HEADER in request.headers,
            )
            raise web.HTTPForbidden()
        return form

    def _signature_ok(self, request: web.Request, params: MultiDict[str]) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return False
        # The URL Twilio signed is the one it was given: the public address plus the
        # path and query exactly as received, never a Host header or scheme a proxy set.
        url = self.deps.public_url + request.raw_path
        try:
            return self.signatures.valid(url, params, signature)
        except Exception:  # odd input inside the validator must be a 403, not a 500
            return False

    # -- /twilio/status ----------------------------------------------------------------

    async def status(self, request: web.Request) -> web.StreamResponse:
        """POST /twilio/status: one call status callback."""
        started = time.perf_counter()
        try:
            return await self._status(request)
        finally:
            self.deps.metrics.callback_seconds.observe(time.perf_counter() - started)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        form = await self._admit(request)
        call_id = _call_id(request)
        try:
            event = call_event_from_form(self._form(form))
        except MalformedCallback as exc:
            return self._malformed(str(exc))
        tokens = structlog.contextvars.bind_contextvars(call_sid=event.call_sid)
        try:
            if event.status not in FINAL_TWILIO_STATUSES and self._intercepted(call_id, event):
                self._count("intercepted")
                self.log.debug("callback_intercepted", status=event.status)
                return _twiml_ok()
            result = await self._call_store(
                "apply_call_event", self.deps.store.apply_call_event(call_id, event)
            )
            if result is None:
                return _retry_later()
            self._finish(result, kind="status", status=event.status)
            return _twiml_ok()
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    def _intercepted(self, call_id: uuid.UUID | None, event: CallEvent) -> bool:
        if self.deps.intercept is None:
            return False
        try:
            return self.deps.intercept(call_id, event)
        except Exception:  # the fast path failing must not lose the event: the store still gets it
            log.exception("callback_intercept_failed")
            return False

    # -- /twilio/recording -------------------------------------------------------------

    async def recording(self, request: web.Request) -> web.StreamResponse:
        """POST /twilio/recording: a recording status callback; only `completed` is kept."""
        started = time.perf_counter()
        try:
            return await self._recording(request)
        finally:
            self.deps.metrics.callback_seconds.observe(time.perf_counter() - started)

    async def _recording(self, request: web.Request) -> web.StreamResponse:
        signed_form = await self._admit(request)
        call_id = _call_id(request)
        try:
            form = self._form(signed_form)
            call_sid = _required(form, "CallSid")
            recording_status = _required(form, "RecordingStatus")
            recording_url = _required(form, "RecordingUrl") if recording_status == "completed" else ""
        except MalformedCallback as exc:
            return self._malformed(str(exc))
        with structlog.contextvars.bound_contextvars(call_sid=call_sid):
            if recording_status != "completed":
                # in-progress / absent / failed recordings carry nothing worth storing.
                self._count("ignored")
                log.info("recording_not_completed", recording_status=recording_status)
                return _twiml_ok()
            result = await self._call_store(
                "record_recording", self.deps.store.record_recording(call_id, call_sid, recording_url)
            )
            if result is None:
                return _retry_later()
            self._finish(result, kind="recording", status=recording_status)
            return _twiml_ok()

    # -- /twilio/gather ----------------------------------------------------------------

    async def gather(self, request: web.Request) -> web.StreamResponse:
        """POST /twilio/gather: a key pressed during a menu; answered with the next document."""
        started = time.perf_counter()
        try:
            return await self._gather(request)
        finally:
            self.deps.metrics.gather_seconds.observe(time.perf_counter() - started)

    async def _gather(self, request: web.Request) -> web.StreamResponse:
        if self.deps.answer_key is None:
            raise web.HTTPNotFound()
        form = await self._admit(request)
        call_id = _call_id(request)
        try:
            press = key_press_from(request.query, self._form(form))
        except MalformedCallback as exc:
            return self._malformed(str(exc), metric=self.deps.metrics.key_presses)
        with structlog.contextvars.bound_contextvars(call_sid=press.call_sid):
            if call_id is None:
                # No call of ours can be meant: acknowledged, so the caller hears a clean end.
                self.deps.metrics.key_presses.labels(result="unknown").inc()
                log.info("gather_unknown_call")
                return _twiml(EMPTY_HANGUP)
            try:
                async with asyncio.timeout(self.deps.store_timeout_seconds):
                    answer = await self.deps.answer_key(call_id, press)
            except DB_ERRORS:
                self.deps.metrics.db_errors.inc()
                self.deps.metrics.key_presses.labels(result="error").inc()
                log.exception("gather_db_error")
                return _retry_later()
            result = answer.applied.result
            self.deps.metrics.key_presses.labels(result=result.value).inc()
            if result is ApplyResult.UNKNOWN:
                log.info("gather_unknown_call")
            else:
                log.info("key_pressed", result=result.value, response=answer.applied.response)
            return _twiml(answer.document)

    # -- /twilio/twiml -----------------------------------------------------------------

    async def twiml(self, request: web.Request) -> web.StreamResponse:
        """GET|POST /twilio/twiml: the TwiML document of a call (a script too long to
        inline, or one that depends on who answered: AnsweredBy)."""
        form = await self._admit(request)
        call_id = _call_id(request)
        if call_id is None:
            raise web.HTTPNotFound()
        fields = request.query if request.method == "GET" else (form or MultiDict())
        answered_by = fields.get("AnsweredBy") or None
        try:
            async with asyncio.timeout(self.deps.store_timeout_seconds):
                document = await self.deps.render_twiml(call_id, answered_by)
        except DB_ERRORS:
            self.deps.metrics.db_errors.inc()
            log.exception("twiml_db_error")
            return _retry_later()
        if document is None:
            log.info("twiml_unknown_call")
            raise web.HTTPNotFound()
        return _twiml(document)

    # -- shared callback plumbing ------------------------------------------------------

    @staticmethod
    def _form(form: MultiDict[str] | None) -> Mapping[str, str]:
        if form is None:
            raise MalformedCallback("body is not a UTF-8 application/x-www-form-urlencoded form")
        return form

    def _malformed(self, reason: str, metric: Counter | None = None) -> web.StreamResponse:
        (metric or self.deps.metrics.callbacks).labels(result="malformed").inc()
        log.warning("callback_malformed", reason=reason)
        return web.Response(status=400, text=reason + "\n")

    async def _call_store(self, operation: str, call: Awaitable[ApplyResult]) -> ApplyResult | None:
        """Await one store operation; None (after logging and counting) when the database failed."""
        try:
            # A timeout scope, not wait_for: on Python 3.11 wait_for wraps the call in a
            # task of its own, a cost paid by every callback.
            async with asyncio.timeout(self.deps.store_timeout_seconds):
                return await call
        except DB_ERRORS:
            # A 503 invites a retry, and the store is idempotent, so a retried callback
            # is always safe.
            self.deps.metrics.db_errors.inc()
            self._count("error")
            log.exception("callback_db_error", operation=operation)
            return None

    def _finish(self, result: ApplyResult, *, kind: str, status: str) -> None:
        self._count(result.value)
        if result is ApplyResult.UNKNOWN:
            log.info("callback_unknown_call", kind=kind, status=status)
        else:
            self.log.debug("callback_handled", kind=kind, status=status, result=result.value)

    def _count(self, result: str) -> None:
        child = self._results.get(result)
        if child is None:
            child = self._results[result] = self.deps.metrics.callbacks.labels(result=result)
        child.inc()

    # -- operational endpoints ---------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        """GET /healthz: 200 while the process can answer at all."""
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        """GET /readyz: 200 only while the database and the LISTEN connection are up."""
        try:
            ready = await asyncio.wait_for(self.deps.is_ready(), timeout=READY_TIMEOUT_SECONDS)
        except Exception:  # a probe that cannot tell is a "not ready"
            log.warning("readiness_check_failed", exc_info=True)
            ready = False
        detail = "".join(f"{line}\n" for line in self._readiness_detail())
        if ready:
            return web.Response(text="ready\n" + detail)
        return web.Response(status=503, text="not ready\n" + detail)

    def _readiness_detail(self) -> list[str]:
        if self.deps.readiness_detail is None:
            return []
        try:
            return self.deps.readiness_detail()
        except Exception:  # the detail is a courtesy: it never changes the answer
            log.exception("readiness_detail_failed")
            return []


def _metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def serve_metrics(request: web.Request) -> web.StreamResponse:
        """GET /metrics: the Prometheus text exposition of this process's registry."""
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return serve_metrics


def _twiml_ok() -> web.Response:
    return _twiml(EMPTY_TWIML)


def _twiml(document: str) -> web.Response:
    return web.Response(text=document, content_type="text/xml", charset="utf-8")


def _retry_later() -> web.Response:
    return web.Response(status=503, text="database unavailable, retry later\n", headers={"Retry-After": "1"})


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _access_log(app_log: FilteringBoundLogger) -> Any:
    """The middleware writing one `http_request` line per request (through `app_log`,
    bound once), with call_id bound for every line logged inside.

    Only the path is logged, never the query string (only call_id is taken from it)
    nor any header: the signature stays out of the logs.
    """

    @web.middleware
    async def access_log(request: web.Request, handler: _Handler) -> web.StreamResponse:
        started = time.perf_counter()
        tokens: Mapping[str, Any] = {}
        if request.path.startswith("/twilio/"):
            # The parsed id only: a raw query value is attacker-controlled text.
            call_id = _call_id(request)
            tokens = structlog.contextvars.bind_contextvars(call_id=str(call_id) if call_id else None)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            app_log.exception("http_unhandled_error", method=request.method, path=request.path)
            raise web.HTTPInternalServerError() from None
        finally:
            emit = app_log.debug if request.path in _QUIET_PATHS and status < 500 else app_log.info
            emit(
                "http_request",
                method=request.method,
                path=request.path,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            if tokens:
                structlog.contextvars.reset_contextvars(**tokens)

    return access_log


def create_app(deps: WebhookDeps, *, with_metrics: bool = True) -> web.Application:
    """The aiohttp application serving the routes of docs/webhooks.md for one daemon;
    without /metrics when that has a listener of its own (`create_metrics_app`)."""
    # client_max_size bounds bodies without a Content-Length (chunked) as well.
    # Bound once, to the logging configured at start (the entry point configures it
    # before building the app): per request, an unbound logger is bound again on
    # every line, logged or not.
    app_log = log.bind()
    app = web.Application(client_max_size=deps.max_body_bytes, middlewares=[_access_log(app_log)])
    app[DEPS_KEY] = deps
    handlers = _Webhooks(deps, app_log)
    app.router.add_post("/twilio/status", handlers.status)
    app.router.add_post("/twilio/recording", handlers.recording)
    app.router.add_post("/twilio/gather", handlers.gather)
    app.router.add_get("/twilio/twiml", handlers.twiml, allow_head=False)
    app.router.add_post("/twilio/twiml", handlers.twiml)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    if with_metrics:
        app.router.add_get("/metrics", _metrics_handler(deps.metrics))
    return app


def create_metrics_app(metrics: Metrics) -> web.Application:
    """An application serving only GET /metrics (`http.metrics_port`)."""
    app = web.Application(middlewares=[_access_log(log.bind())])
    app.router.add_get("/metrics", _metrics_handler(metrics))
    return app


async def serve(app: web.Application, host: str, port: int, guard: HttpGuard | None = None) -> web.AppRunner:
    """Start serving `app` on host:port (0 = any free port) under `guard`'s connection
    and memory limits (the process's one guard; default: one of its own with the
    default limits) and return the runner; the caller stops it with
    `await runner.cleanup()`.

    aiohttp's own access log is off: the middleware writes one structlog line per request.
    """
    runner = await (guard or default_guard()).serve(app, host, port)
    log.info("http_listening", host=host, port=bound_port(runner))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner's first site is bound to (useful after port=0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the runner has no bound TCP site")
