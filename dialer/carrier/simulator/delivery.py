"""Every HTTP request the simulator makes to the application: signed as Twilio signs
them, retried a few times like Twilio's webhooks, and recorded on the call.

All outgoing requests go through `Delivery.send`, so a rule about where the simulator
may send requests belongs there and nowhere else."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlencode

import aiohttp
import structlog
from twilio.request_validator import RequestValidator

from dialer.carrier.simulator.records import API_VERSION, CallbackRecord, SimCall
from dialer.loopback import is_loopback_url

log = structlog.get_logger(__name__)


def base_params(call: SimCall) -> dict[str, str]:
    """The parameters Twilio puts on every request about a call."""
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


def call_params(call: SimCall) -> dict[str, str]:
    """The parameters of a TwiML request (the answer's, a <Gather>'s action, a
    <Redirect>, a <Dial>'s action): the call's, its status, and AnsweredBy if known."""
    params = base_params(call)
    params["CallStatus"] = call.status
    if call.answered_by:
        params["AnsweredBy"] = call.answered_by
    return params


class Delivery:
    """Signs and sends webhooks for one simulated account."""

    def __init__(
        self, auth_token: str, *, attempts: int, timeout_seconds: float, allow_remote: bool = False
    ) -> None:
        self._validator = RequestValidator(auth_token)
        self.attempts = max(1, attempts)
        self.timeout_seconds = timeout_seconds
        # Anyone holding the simulator's published credentials chooses these URLs: by
        # default they must stay on this machine (simulator.allow_remote_callbacks).
        self.allow_remote = allow_remote
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session (inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def signed(self, url: str, params: dict[str, str], method: str) -> tuple[str, dict[str, str] | None, str]:
        """(target URL, form body or None, X-Twilio-Signature) for one request.

        POST signs the URL plus the sorted form; GET carries the params in the query
        string and signs the full URL alone, as Twilio does."""
        if method == "GET":
            target = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
            return target, None, self._validator.compute_signature(target, {})
        return url, params, self._validator.compute_signature(url, params)

    async def send(
        self,
        call: SimCall,
        kind: str,
        url: str,
        params: dict[str, str],
        method: str | None,
        *,
        drop: bool = False,
        attempts: int | None = None,
    ) -> str | None:
        """Send one signed webhook, retrying a few times; returns the body if delivered
        (a 2xx answer), None otherwise. `drop` records it as lost without sending."""
        record = CallbackRecord(kind=kind, url=url, params=dict(params), at=time.monotonic())
        call.callbacks.append(record)
        if drop:
            record.dropped = True
            log.debug("callback_dropped", call_sid=call.sid, kind=kind)
            return None
        if not self.allow_remote and not is_loopback_url(url):
            record.error = "remote_url_refused"
            log.warning("callback_remote_url_refused", call_sid=call.sid, kind=kind)
            return None
        assert self._session is not None, "Simulator.start() was not awaited"
        verb = (method or "POST").upper()
        target, data, signature = self.signed(url, params, verb)
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"}
        for attempt in range(attempts or self.attempts):
            if attempt:
                await asyncio.sleep(0.05 * 2 ** (attempt - 1))  # Twilio-like short backoff
            record.attempts += 1
            try:
                # A redirect could lead a loopback URL anywhere: followed only when allowed.
                async with self._session.request(
                    verb, target, data=data, headers=headers, allow_redirects=self.allow_remote
                ) as response:
                    body = await response.text()
                    record.http_status = response.status
                    record.body = body
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
