"""The Carrier port on the official `twilio` package, asynchronously.

The same code talks to real Twilio and to the simulator: `twilio.api_base_url` is set
as the base URL of twilio-python's `api` domain, which builds every Calls URL (and the
paging links) from it.

Error classification (see docs/carrier.md) turns every failure into a CarrierError
whose `kind` tells the engine whether the number is bad, the request was refused,
can be retried for free, or may have placed a call nobody heard about.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import structlog
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from dialer.carrier import PERMANENT_ERROR_CODES, CarrierCall, DialRequest
from dialer.config import TwilioSettings
from dialer.errors import CarrierError, CarrierErrorKind

log = structlog.get_logger(__name__)

T = TypeVar("T")

_TRANSIENT = CarrierErrorKind.TRANSIENT
_UNKNOWN = CarrierErrorKind.UNKNOWN

# The status callbacks the daemon asks for: only the final one (Twilio sends `completed`
# for every final status — busy, no-answer, failed, canceled — with CallDuration and,
# under machine detection, AnsweredBy). The intermediate ones (initiated, ringing,
# answered) changed nothing the state machine needs, yet each was a signed request
# to receive, parse and verify (docs/benchmarks.md#fewer-requests-per-call). A call
# that goes silent is still fetched after `reconcile_after_seconds`.
STATUS_EVENTS: tuple[str, ...] = ("completed",)
# Every event Twilio offers, for whoever wants the whole sequence (the simulator tests).
ALL_STATUS_EVENTS: tuple[str, ...] = ("initiated", "ringing", "answered", "completed")
# HTTP statuses that say the request was not acted on and may be repeated.
_TRANSIENT_STATUSES = frozenset({429, 500, 503})
# Gateway statuses on a create: the request may have reached Twilio behind the gateway.
_UNCERTAIN_STATUSES = frozenset({502, 504})
# Twilio lists newest first with second-resolution dates; look a little further back
# than asked so a call created in the same second (or under clock skew) is not missed.
DEFAULT_FIND_MARGIN_SECONDS = 5.0
_FIND_PAGE_SIZE = 50
_FIND_MAX_PAGES = 10


@dataclass
class _Progress:
    """Whether the current request's headers left this process (set by aiohttp tracing)."""

    headers_sent: bool = False


# One per request task, so concurrent dials do not see each other's progress.
_progress: contextvars.ContextVar[_Progress | None] = contextvars.ContextVar("twilio_progress", default=None)


async def _on_headers_sent(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    progress = _progress.get()
    if progress is not None:
        progress.headers_sent = True


def _as_naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _naive_utc(value: object) -> datetime | None:
    return _as_naive_utc(value) if isinstance(value, datetime) else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def to_carrier_call(instance: Any) -> CarrierCall:
    """Map a twilio-python CallInstance onto CarrierCall (times as naive UTC)."""
    return CarrierCall(
        sid=str(instance.sid),
        status=str(instance.status),
        to=str(instance.to or ""),
        from_=str(getattr(instance, "_from", None) or ""),
        date_created=_naive_utc(instance.date_created),
        start_time=_naive_utc(instance.start_time),
        end_time=_naive_utc(instance.end_time),
        duration=_int_or_none(instance.duration),
        answered_by=instance.answered_by or None,
    )


def classify_status(status: int, code: int | None, *, on_create: bool) -> CarrierErrorKind:
    """The CarrierError kind for a Twilio HTTP error response. The permanent codes are
    the one set a callback's ErrorCode is judged by too (dialer.carrier)."""
    if code in PERMANENT_ERROR_CODES:
        return CarrierErrorKind.PERMANENT
    if on_create and status in _UNCERTAIN_STATUSES:
        return CarrierErrorKind.UNKNOWN
    if status in _TRANSIENT_STATUSES or status >= 500:
        return CarrierErrorKind.TRANSIENT
    return CarrierErrorKind.REJECTED


class TwilioCarrier:
    """Carrier implementation on twilio-python's asynchronous client.

    Create it with `await TwilioCarrier.create(settings)` inside the running loop (the
    aiohttp session binds to it) and `await close()` it when done."""

    def __init__(
        self,
        client: Client,
        http: AsyncTwilioHttpClient,
        *,
        request_timeout_seconds: float,
        find_margin_seconds: float = DEFAULT_FIND_MARGIN_SECONDS,
        status_events: Sequence[str] | None = None,
    ) -> None:
        self._client = client
        self._http = http
        self._timeout = request_timeout_seconds
        self._find_margin = timedelta(seconds=find_margin_seconds)
        self._status_events = list(STATUS_EVENTS if status_events is None else status_events)

    @classmethod
    async def create(
        cls,
        settings: TwilioSettings,
        *,
        find_margin_seconds: float = DEFAULT_FIND_MARGIN_SECONDS,
        connection_limit: int = 256,
        status_events: Sequence[str] | None = None,
    ) -> TwilioCarrier:
        """A carrier bound to the running loop, talking to `settings.api_base_url`;
        `status_events` overrides the callbacks asked for (default STATUS_EVENTS)."""
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_on_headers_sent)
        # max_retries stays None: twilio's retrying session re-sends a POST after a 5xx,
        # which could ring a phone twice. The session is ours so its pool and tracing are.
        http = AsyncTwilioHttpClient(pool_connections=False)
        http.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connection_limit), trace_configs=[trace]
        )
        client = Client(
            settings.account_sid,
            settings.auth_token.get_secret_value(),
            http_client=http,
            environment={},  # never pick up TWILIO_* from the process environment
        )
        client.api.base_url = settings.api_base_url
        return cls(
            client,
            http,
            request_timeout_seconds=settings.request_timeout_seconds,
            find_margin_seconds=find_margin_seconds,
            status_events=status_events,
        )

    async def _call(self, what: str, make: Callable[[], Awaitable[T]], *, on_create: bool = False) -> T:
        """Run one REST request under the timeout, turning every failure into CarrierError."""
        progress = _Progress()
        token = _progress.set(progress)
        try:
            async with asyncio.timeout(self._timeout):
                return await make()
        except TimeoutError as exc:
            # The async client ignores its own timeout; this is the only bound. A create
            # whose headers went out may have placed the call.
            kind = _UNKNOWN if on_create and progress.headers_sent else _TRANSIENT
            raise CarrierError(f"{what}: no answer within {self._timeout:g}s", kind=kind) from exc
        except TwilioRestException as exc:
            code = _int_or_none(exc.code)
            kind = classify_status(exc.status, code, on_create=on_create)
            raise CarrierError(f"{what}: {exc.msg}", kind=kind, status=exc.status, code=code) from exc
        except aiohttp.ClientConnectorError as exc:
            # Refused / unreachable before anything was sent: nothing happened.
            raise CarrierError(f"{what}: cannot connect: {exc}", kind=_TRANSIENT) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Dropped mid-request (ServerDisconnectedError, reset, broken payload).
            kind = _UNKNOWN if on_create and progress.headers_sent else _TRANSIENT
            raise CarrierError(f"{what}: connection lost: {exc!r}", kind=kind) from exc
        except TwilioException as exc:
            # Page parsing raises the bare TwilioException with the response attached.
            response = exc.args[1] if len(exc.args) > 1 else None
            status = getattr(response, "status_code", None)
            kind = classify_status(status, None, on_create=on_create) if status else _TRANSIENT
            message = exc.args[0] if exc.args else exc
            raise CarrierError(f"{what}: {message}", kind=kind, status=status) from exc
        finally:
            _progress.reset(token)

    async def dial(self, request: DialRequest) -> CarrierCall:
        """Place one call (never retried here: a retry could ring a phone twice)."""
        if (request.twiml is None) == (request.twiml_url is None):
            raise ValueError("DialRequest needs exactly one of twiml and twiml_url")
        kwargs: dict[str, Any] = {
            "to": request.to,
            "from_": request.from_,
            "status_callback": request.status_callback_url,
            "status_callback_event": list(self._status_events),
            "status_callback_method": "POST",
            "timeout": request.timeout_seconds,
            "time_limit": request.time_limit_seconds,
        }
        if request.twiml is not None:
            kwargs["twiml"] = request.twiml
        else:
            kwargs["url"] = request.twiml_url
            kwargs["method"] = "POST"
        if request.machine_detection:
            kwargs["machine_detection"] = "DetectMessageEnd" if request.detect_message_end else "Enable"
        if request.record:
            kwargs["record"] = True
            if request.recording_callback_url:
                kwargs["recording_status_callback"] = request.recording_callback_url
                kwargs["recording_status_callback_method"] = "POST"
        instance = await self._call(
            "create call", lambda: self._client.calls.create_async(**kwargs), on_create=True
        )
        call = to_carrier_call(instance)
        log.debug("call_created", call_sid=call.sid, status=call.status)
        return call

    async def fetch(self, sid: str) -> CarrierCall:
        """The carrier's current record of call `sid`."""
        instance = await self._call("fetch call", lambda: self._client.calls(sid).fetch_async())
        return to_carrier_call(instance)

    async def find(self, to: str, since: datetime) -> list[CarrierCall]:
        """Calls to `to` created at or after `since` (naive UTC), newest first.

        Filters on date_created here rather than with Twilio's StartTime filter: that
        one has day resolution and skips calls not yet dialed (start_time empty), which
        are exactly the ones an unknown-outcome reconcile is looking for. Looks back
        `find_margin_seconds` further than `since`; callers ignore sids they know."""
        cutoff = _as_naive_utc(since) - self._find_margin

        async def collect() -> list[CarrierCall]:
            found: list[CarrierCall] = []
            page = await self._client.calls.page_async(to=to, page_size=_FIND_PAGE_SIZE)
            for _ in range(_FIND_MAX_PAGES):
                older = False
                for instance in page:
                    call = to_carrier_call(instance)
                    if call.date_created is not None and call.date_created < cutoff:
                        older = True
                        continue
                    found.append(call)
                if older:
                    break
                page = await page.next_page_async()
                if page is None:
                    break
            return found

        return await self._call("list calls", collect)

    async def hangup(self, sid: str) -> None:
        """End call `sid` (a ringing call is canceled, a live one hung up)."""
        await self._call("hang up call", lambda: self._client.calls(sid).update_async(status="completed"))

    async def close(self) -> None:
        """Close the aiohttp session."""
        await self._http.close()
