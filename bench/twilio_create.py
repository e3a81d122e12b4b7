"""What one carrier request costs the daemon in the official twilio package: process
CPU per request against the instant simulator in its own process, three ways, rounds
interleaved in one run: `TwilioCarrier.dial` (`calls.create_async` → CallInstance →
CarrierCall, under the carrier's timeout and tracing), the same client's lighter
`request_async` with the same form and the JSON read directly (under the same
timeout and tracing), and a bare aiohttp POST of that form.

    .venv/bin/python -m bench.twilio_create [--creates 2000] [--rounds 2]

Read it with py-spy for the breakdown:
    py-spy record -r 250 --format raw -o create.txt -- .venv/bin/python -m bench.twilio_create --only dial
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from pydantic import SecretStr

from bench._common import FROM_NUMBER, Result, quiet, report, simulator_process
from bench.lifecycle import cpu_seconds
from dialer.carrier import DialRequest
from dialer.carrier.simulator import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from dialer.carrier.twilio import STATUS_EVENTS, TwilioCarrier
from dialer.config import TwilioSettings

CONCURRENCY = 50
# Callbacks go to the discard port: refused at once, the simulator's work, not ours.
CALLBACK = "http://127.0.0.1:9/twilio/status?call_id=6f1c2a4e-0d9b-4a3e-9d55-1c1e7a2b3c4d"


def _request(n: int) -> DialRequest:
    return DialRequest(
        to=f"+3491{n % 10_000_000:07d}",
        from_=FROM_NUMBER,
        status_callback_url=CALLBACK,
        twiml="<Response><Say>Hola</Say></Response>",
        timeout_seconds=30,
        time_limit_seconds=600,
    )


def _form(request: DialRequest) -> dict[str, object]:
    """The form twilio-python sends for the daemon's dial (same fields, same names)."""
    return {
        "To": request.to,
        "From": request.from_,
        "StatusCallback": request.status_callback_url,
        "StatusCallbackEvent": list(STATUS_EVENTS),
        "StatusCallbackMethod": "POST",
        "Timeout": request.timeout_seconds,
        "TimeLimit": request.time_limit_seconds,
        "Twiml": request.twiml,
    }


async def _drive(creates: int, one: Callable[[int], Awaitable[str]]) -> tuple[float, float]:
    """`creates` requests, CONCURRENCY at a time; (CPU ms per create, creates/s)."""
    todo = iter(range(creates))

    async def worker() -> None:
        for n in todo:
            sid = await one(n)
            assert sid.startswith("CA"), sid

    wall, cpu = time.monotonic(), cpu_seconds()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return (cpu_seconds() - cpu) / creates * 1000, creates / (time.monotonic() - wall)


async def run(creates: int, rounds: int, only: str | None) -> None:
    """Interleaved rounds of each way, then the medians."""
    figures: dict[str, list[tuple[float, float]]] = {"dial": [], "request": [], "aiohttp": []}
    load = os.getloadavg()[0]
    with simulator_process(instant=True) as sim_url:
        settings = TwilioSettings(
            account_sid=SIMULATOR_ACCOUNT_SID,
            auth_token=SecretStr(SIMULATOR_AUTH_TOKEN),
            api_base_url=sim_url,
        )
        carrier = await TwilioCarrier.create(settings)
        client = carrier._client
        url = f"{sim_url}/2010-04-01/Accounts/{SIMULATOR_ACCOUNT_SID}/Calls.json"
        basic = aiohttp.BasicAuth(SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN)
        auth = {"Authorization": basic.encode()}
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

        async def dial(n: int) -> str:
            return (await carrier.dial(_request(n))).sid

        async def request(n: int) -> str:
            form = _form(_request(n))
            response = await carrier._call(  # under the same timeout and tracing as dial
                "create call", lambda: client.request_async("POST", url, data=form), on_create=True
            )
            return str(json.loads(response.text)["sid"])

        async def bare(n: int) -> str:
            async with session.post(url, data=_form_pairs(_request(n)), headers=auth) as response:
                return str(json.loads(await response.text())["sid"])

        ways = {"dial": dial, "request": request, "aiohttp": bare}
        try:
            for r in range(rounds):
                order = list(ways) if r % 2 == 0 else list(reversed(ways))
                for name in order:
                    if only and name != only:
                        continue
                    figures[name].append(await _drive(creates, ways[name]))
                    cpu, rate = figures[name][-1]
                    print(f"  round {r + 1}: {name:8} {cpu:.3f} ms CPU per request, {rate:,.0f}/s")
        finally:
            await session.close()
            await carrier.close()
    base = statistics.median(c for c, _ in figures["aiohttp"]) if figures["aiohttp"] else None
    for name, label in (
        ("dial", "dial: calls.create_async → CarrierCall"),
        ("request", "client.request_async, same form"),
        ("aiohttp", "bare aiohttp POST, same form"),
    ):
        if figures[name]:
            cpu = statistics.median(c for c, _ in figures[name])
            report(
                Result(
                    "twilio", f"{label}, CPU per request", cpu, "ms",
                    baseline="bare aiohttp" if base and name != "aiohttp" else "",
                    baseline_value=base if name != "aiohttp" else None,
                    ratio=cpu / base if base and name != "aiohttp" else None,
                )
            )
    print(
        f"  (medians of {rounds} rounds of {creates:,} requests, {CONCURRENCY} at a time;"
        f" load average {load:.2f})"
    )


def _form_pairs(request: DialRequest) -> list[tuple[str, str]]:
    """The form as aiohttp wants it: repeated keys for lists, strings."""
    pairs: list[tuple[str, str]] = []
    for key, value in _form(request).items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, str(item)))
    return pairs


def main() -> None:
    """Parse flags and run."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=["dial", "request", "aiohttp"], help="one way only (profiling)")
    args = parser.parse_args()
    quiet()
    asyncio.run(run(args.creates, args.rounds, args.only))


if __name__ == "__main__":
    main()
