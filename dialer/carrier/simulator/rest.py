"""The REST subset of Twilio's API the daemon uses: create, fetch, list and update a
Call under `/2010-04-01/Accounts/{AccountSid}/`, with Twilio's auth and error bodies."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from dialer.carrier import FINAL_TWILIO_STATUSES
from dialer.carrier.simulator.records import API_VERSION, SimCall, rfc2822

if TYPE_CHECKING:
    from dialer.carrier.simulator.core import Simulator

_E164 = re.compile(r"\+[1-9]\d{6,14}")
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


def error(status: int, code: int | None = None, message: str | None = None) -> web.Response:
    """A Twilio-shaped JSON error response."""
    code = code or {401: 20003, 404: 20404, 429: 20429}.get(status, 20000 + status)
    body = {
        "code": code,
        "message": message or _CODE_MESSAGES.get(code) or _ERROR_MESSAGES.get(status, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


def call_uri(call: SimCall) -> str:
    """The path of a call's JSON resource."""
    return f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}.json"


def resource(call: SimCall) -> dict[str, Any]:
    """The call as Twilio's JSON resource."""
    final = call.status in FINAL_TWILIO_STATUSES
    base = call_uri(call).removesuffix(".json")
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
        "uri": call_uri(call),
    }


class RestApi:
    """The HTTP handlers of one simulated account."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application) -> None:
        """Serve Twilio's Calls paths on `app`."""
        base = f"/{API_VERSION}/Accounts/{{account}}"
        app.router.add_post(f"{base}/Calls.json", self.create)
        app.router.add_get(f"{base}/Calls.json", self.list)
        app.router.add_get(f"{base}/Calls/{{sid}}.json", self.fetch)
        app.router.add_post(f"{base}/Calls/{{sid}}.json", self.update)

    def _authorized(self, request: web.Request) -> web.Response | None:
        """None if the request carries this account's credentials, else the error to send."""
        header = request.headers.get("Authorization", "")
        try:
            auth = aiohttp.BasicAuth.decode(header) if header else None
        except ValueError:
            auth = None
        if (
            auth is None
            or not hmac.compare_digest(auth.login.encode(), self.sim.account_sid.encode())
            or not hmac.compare_digest(auth.password.encode(), self.sim.auth_token.encode())
        ):
            return error(401, 20003)
        if request.match_info["account"] != self.sim.account_sid:
            return error(404, 20404)
        return None

    async def create(self, request: web.Request) -> web.Response:
        """POST Calls.json: place a call (or play the scripted REST failure)."""
        denied = self._authorized(request)
        if denied is not None:
            return denied
        sim = self.sim
        sim.record_create()
        raw = await request.post()
        form = {key: [str(v) for v in raw.getall(key)] for key in set(raw.keys())}
        to, from_ = _first(form, "To"), _first(form, "From")
        if not to:
            return error(400, 21201)
        if not from_:
            return error(400, 21213)
        if not _first(form, "Url") and not _first(form, "Twiml"):
            return error(400, 21205)
        if not _E164.fullmatch(to):
            return error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        outcome = sim.next_outcome(to)
        latency = sim.latency()
        if outcome.startswith("error:"):
            parts = outcome.split(":")
            await sim.until_closing(latency)
            return error(int(parts[1]), int(parts[2]) if len(parts) > 2 else None)
        if outcome == "hang":
            await sim.until_closing(sim.hang_seconds)
            return error(503)
        hang = outcome.startswith("accept-then-hang")
        if hang:
            outcome = outcome.partition(":")[2] or "answered"
        try:
            outcome, callee = sim.callee_of(outcome)
        except ValueError:
            return error(400, 20001, f"simulator: unknown scripted outcome {outcome!r}")
        call = sim.create_call(to, from_, form, outcome, latency, callee=callee)
        # Twilio answers with the call as created (queued), whatever happened since.
        created = resource(call)
        await sim.until_closing(sim.hang_seconds if hang else latency)
        await sim.or_closing(sim.hold_create_responses.wait_released())
        return web.json_response(created, status=201)

    def _known_call(self, request: web.Request) -> SimCall | web.Response:
        """The call a /Calls/{Sid}.json request names, or the error response Twilio
        would give (401 without valid credentials, 404 for an unknown sid)."""
        denied = self._authorized(request)
        if denied is not None:
            return denied
        call = self.sim.by_sid.get(request.match_info["sid"])
        return call if call is not None else error(404, 20404)

    async def fetch(self, request: web.Request) -> web.Response:
        """GET Calls/{Sid}.json."""
        call = self._known_call(request)
        if isinstance(call, web.Response):
            return call
        return web.json_response(resource(call))

    async def update(self, request: web.Request) -> web.Response:
        """POST Calls/{Sid}.json with Status=completed|canceled: hang up."""
        call = self._known_call(request)
        if isinstance(call, web.Response):
            return call
        form = await request.post()
        status = str(form.get("Status") or "")
        if status not in ("completed", "canceled"):
            return error(400, 20001, "simulator: only Status=completed|canceled is supported")
        # Twilio ignores cancel on an answered call and any hang-up on a finished one.
        if not call.final.is_set() and not (status == "canceled" and call.status == "in-progress"):
            call.hangup_status = status
            call.hangup_requested.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.sim.or_closing(call.final.wait())
        return web.json_response(resource(call))

    async def list(self, request: web.Request) -> web.Response:
        """GET Calls.json: newest first, filtered and paged like Twilio."""
        denied = self._authorized(request)
        if denied is not None:
            return denied
        q = request.query
        calls = sorted(self.sim.calls, key=lambda c: c.created_at, reverse=True)
        if to := q.get("To"):
            calls = [c for c in calls if c.to == to]
        if from_ := q.get("From"):
            calls = [c for c in calls if c.from_ == from_]
        if status := q.get("Status"):
            calls = [c for c in calls if c.status == status]
        calls = _filter_start_time(calls, q)
        try:
            size = max(1, min(1000, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
        except ValueError:
            return error(400, 20001, "PageSize and Page must be integers")
        chunk = calls[page * size : (page + 1) * size]
        path = f"/{API_VERSION}/Accounts/{self.sim.account_sid}/Calls.json"
        kept = {k: v for k, v in q.items() if k not in ("Page", "PageSize", "PageToken")}

        def page_uri(n: int) -> str:
            return f"{path}?{urlencode({**kept, 'PageSize': size, 'Page': n})}"

        more = (page + 1) * size < len(calls)
        body = {
            "calls": [resource(c) for c in chunk],
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
