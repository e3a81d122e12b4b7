"""Signed status callbacks per second a running daemon sustains, with p50/p99, from a
load generator in its own process holding 50 connections; beside a bare aiohttp
handler that parses the same form and runs one UPDATE per request, in the same run.

Each call gets Twilio's four callbacks in order (initiated, ringing, in-progress,
completed) for calls held by another live instance, so every callback goes through
signature validation and the store: the worst case for this daemon (the calls it
dials itself absorb the three non-final ones in memory).

Then, on the same daemon, key presses (`/twilio/gather`, docs/webhooks.md#the-gather-route):
every call of a menu campaign gets `*` (recorded, answered with the script again) then
`1` (recorded as confirmed, answered with its text and a hang-up) — each one signed
request, one SQL statement and a TwiML document — reported beside the status figure.

    .venv/bin/python bench/webhooks.py [--calls 5000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from bench._common import (
    Result,
    daemon_settings,
    free_port,
    fresh_database,
    make_campaign,
    percentile,
    postgres,
    quiet,
    report,
)
from dialer import database
from dialer.carrier.simulator import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN, start_simulator
from dialer.config import DatabaseSettings, SimulatorSettings
from dialer.service import Daemon

CONNECTIONS = 50
STATUSES = ("initiated", "ringing", "in-progress", "completed")
PRESSES = ("*", "1")
MENU = {
    "1": {"outcome": "confirmed", "say": "Gracias {{first_name}}, su cita queda confirmada."},
    "2": {"outcome": "declined", "say": "Entendido, anulamos su cita."},
    "9": {"action": "opt_out", "say": "No volveremos a llamarle."},
    "*": {"action": "repeat"},
}


def _requests(public_url: str, calls: list[tuple[str, str]]) -> list[list[tuple[str, bytes, str]]]:
    """Per call, its four signed callbacks (path, body, signature), 15 fields each."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(SIMULATOR_AUTH_TOKEN)
    stamp = format_datetime(datetime.now(UTC), usegmt=True).replace("GMT", "+0000")
    out = []
    for call_id, sid in calls:
        path = f"/twilio/status?call_id={call_id}"
        seq = []
        for n, status in enumerate(STATUSES):
            params = {
                "AccountSid": SIMULATOR_ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": sid,
                "CallStatus": status, "Called": "+34910000001", "Caller": "+34910000000",
                "Direction": "outbound-api", "From": "+34910000000", "To": "+34910000001",
                "CallbackSource": "call-progress-events", "SequenceNumber": str(n), "Timestamp": stamp,
                "CallDuration": "12" if status == "completed" else "0", "SipResponseCode": "200",
                "ApiVersionDate": "2010-04-01",
            }
            signature = validator.compute_signature(public_url + path, params)
            seq.append((path, urlencode(params).encode(), signature))
        out.append(seq)
    return out


def _gather_requests(public_url: str, calls: list[tuple[str, str]]) -> list[list[tuple[str, bytes, str]]]:
    """Per call, its key presses (path, body, signature) as Twilio sends a <Gather> action."""
    from twilio.request_validator import RequestValidator

    from dialer.twiml import gather_url

    validator = RequestValidator(SIMULATOR_AUTH_TOKEN)
    out = []
    for call_id, sid in calls:
        seq = []
        for keys, digit in enumerate(PRESSES):
            url = gather_url(public_url, uuid.UUID(call_id), read=0, keys=keys)
            params = {
                "AccountSid": SIMULATOR_ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": sid,
                "CallStatus": "in-progress", "Called": "+34910000001", "Caller": "+34910000000",
                "Direction": "outbound-api", "From": "+34910000000", "To": "+34910000001",
                "Digits": digit, "FinishedOnKey": "",
            }
            signature = validator.compute_signature(url, params)
            seq.append((url.removeprefix(public_url), urlencode(params).encode(), signature))
        out.append(seq)
    return out


def _load_main(out: Any, base_url: str, public_url: str, calls: list[tuple[str, str]], kind: str) -> None:
    """Child process: sign everything first, then send with CONNECTIONS workers; each
    worker plays one call's requests (callbacks or key presses) in order. Puts
    (elapsed, latencies, errors)."""
    import aiohttp

    work = _requests(public_url, calls) if kind == "status" else _gather_requests(public_url, calls)

    async def go() -> tuple[float, list[float], int]:
        latencies: list[float] = []
        errors = 0
        queue = list(reversed(work))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal errors
                while queue:
                    for path, body, signature in queue.pop():
                        sent = time.perf_counter()
                        async with session.post(
                            base_url + path, data=body, headers={**headers, "X-Twilio-Signature": signature}
                        ) as response:
                            await response.read()
                            if response.status != 200:
                                errors += 1
                        latencies.append((time.perf_counter() - sent) * 1000)

            started = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONNECTIONS))), 300)
            return time.perf_counter() - started, latencies, errors

    out.put(asyncio.run(go()))


def load(
    base_url: str, public_url: str, calls: list[tuple[str, str]], kind: str = "status"
) -> tuple[float, list[float], int]:
    """Run the load generator in its own process and wait for its figures."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_main, args=(queue, base_url, public_url, calls, kind), daemon=True)
    proc.start()
    try:
        result: tuple[float, list[float], int] = queue.get(timeout=600)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return result


async def _seed_calls(conn: asyncpg.Connection, count: int) -> list[tuple[str, str]]:
    """`count` in-progress calls held by another live instance (never rescued)."""
    cid = await make_campaign(conn, count)
    other = uuid.uuid4()
    await conn.execute(
        "INSERT INTO dialer_instances (id, hostname, pid, heartbeat_at) "
        "VALUES ($1, 'elsewhere', 1, timezone('utc', now()) + interval '1 day')",
        other,
    )
    rows = await conn.fetch(
        """
        INSERT INTO calls (campaign_id, contact_id, status, call_sid, claimed_by, claimed_at, dialed_at)
        SELECT $1, contact_id, 'in_progress', 'CA' || md5(contact_id::text), $2,
               timezone('utc', now()), timezone('utc', now())
        FROM campaign_contacts WHERE campaign_id = $1
        RETURNING id, call_sid
        """,
        cid,
        other,
    )
    return [(str(r["id"]), r["call_sid"]) for r in rows]


async def _seed_menu_calls(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """A second attempt, in progress, for every contact of the (finished) status run,
    its campaign now with a menu; held by the other live instance like the first."""
    await conn.execute("UPDATE campaigns SET menu = $1", MENU)
    rows = await conn.fetch(
        """
        INSERT INTO calls (campaign_id, contact_id, status, call_sid, retry_count,
                           claimed_by, claimed_at, dialed_at)
        SELECT campaign_id, contact_id, 'in_progress', 'CA' || md5(contact_id::text || 'menu'), 1,
               claimed_by, timezone('utc', now()), timezone('utc', now())
        FROM calls WHERE retry_count = 0
        RETURNING id, call_sid
        """
    )
    return [(str(r["id"]), r["call_sid"]) for r in rows]


async def bare_server(url: str) -> tuple[web.AppRunner, asyncpg.Pool, str]:
    """The baseline: aiohttp parses the form, one asyncpg UPDATE, 200."""
    pool = await database.create_pool(url, DatabaseSettings(pool_min_size=2, pool_max_size=10))
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_events (sid text PRIMARY KEY, n int NOT NULL)")

    async def handle(request: web.Request) -> web.Response:
        form = await request.post()
        await pool.execute(
            "INSERT INTO bench_events (sid, n) VALUES ($1, 1) "
            "ON CONFLICT (sid) DO UPDATE SET n = bench_events.n + 1",
            form["CallSid"],
        )
        return web.Response(text="<Response/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/twilio/status", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, pool, f"http://127.0.0.1:{port}"


async def run(calls: int) -> None:
    """Baseline, then the daemon, on one server."""
    with postgres() as server:
        async with fresh_database(server) as url:
            conn = await database.connect(url)
            try:
                seeded = await _seed_calls(conn, calls)
            finally:
                await conn.close()
            runner, pool, base = await bare_server(url)
            try:
                b_elapsed, b_lat, b_err = await asyncio.to_thread(load, base, base, seeded)
            finally:
                await runner.cleanup()
                await pool.close()
            sim = await start_simulator(
                SimulatorSettings(), account_sid=SIMULATOR_ACCOUNT_SID, auth_token=SIMULATOR_AUTH_TOKEN
            )
            daemon = Daemon(daemon_settings(url, sim.url), db_url=url)
            try:
                await daemon.start()
                public = daemon.settings.http.public_url
                d_elapsed, d_lat, d_err = await asyncio.to_thread(load, public, public, seeded)
                conn = await database.connect(url)
                try:
                    done = await conn.fetchval("SELECT count(*) FROM calls WHERE status = 'completed'")
                    menu_calls = await _seed_menu_calls(conn)
                finally:
                    await conn.close()
                g_elapsed, g_lat, g_err = await asyncio.to_thread(load, public, public, menu_calls, "gather")
                conn = await database.connect(url)
                try:
                    answered = await conn.fetchval(
                        "SELECT count(*) FROM calls WHERE response = 'confirmed' AND digits = '*1'"
                    )
                finally:
                    await conn.close()
            finally:
                await daemon.stop(drain_seconds=1)
                await sim.stop()
    requests = calls * len(STATUSES)
    base_rate, rate = requests / b_elapsed, requests / d_elapsed
    if d_err or b_err or done != calls:
        print(f"  WARNING: {d_err} daemon errors, {b_err} baseline errors, {done}/{calls} calls completed")
    report(Result("webhooks", "bare form + 1 UPDATE", base_rate, "req/s"))
    report(
        Result(
            "webhooks", f"signed callbacks ({requests:,}, {CONNECTIONS} conns)", rate, "req/s",
            baseline="bare form + UPDATE", baseline_value=base_rate, ratio=rate / base_rate,
            goal=">= 0.60", met=rate / base_rate >= 0.6,
        )
    )
    report(Result("webhooks", "callback p50", percentile(d_lat, 50), "ms",
                  baseline="bare p50", baseline_value=percentile(b_lat, 50)))
    p99 = percentile(d_lat, 99)
    report(Result("webhooks", "callback p99", p99, "ms", baseline="bare p99",
                  baseline_value=percentile(b_lat, 99), goal="< 50 ms", met=p99 < 50))
    presses = calls * len(PRESSES)
    if g_err or answered != calls:
        print(f"  WARNING: {g_err} gather errors, {answered}/{calls} calls answered confirmed after *1")
    g_rate = presses / g_elapsed
    report(
        Result(
            "webhooks", f"signed key presses ({presses:,}, {CONNECTIONS} conns)", g_rate, "req/s",
            baseline="status callbacks, same daemon", baseline_value=rate, ratio=g_rate / rate,
            goal=">= 1.00 of status", met=g_rate / rate >= 1.0,
        )
    )
    report(Result("webhooks", "key press p50", percentile(g_lat, 50), "ms",
                  baseline="callback p50", baseline_value=percentile(d_lat, 50)))
    g99 = percentile(g_lat, 99)
    report(Result("webhooks", "key press p99", g99, "ms", baseline="callback p99",
                  baseline_value=p99, goal="<= callback p99", met=g99 <= p99))
    ours, theirs = signature_check_cost()
    report(Result("webhooks", "signature check (SignatureChecker)", ours, "µs",
                  baseline="RequestValidator.validate", baseline_value=theirs, ratio=ours / theirs))


def signature_check_cost(checks: int = 20_000) -> tuple[float, float]:
    """Microseconds of CPU per signature check of one realistic callback (15 fields, the
    daemon's URL form): the daemon's SignatureChecker (one HMAC for the URL form
    Twilio used) and twilio's RequestValidator.validate (two, with and without the
    port), in the same process, alternated."""
    from twilio.request_validator import RequestValidator

    from dialer.signatures import SignatureChecker

    validator = RequestValidator(SIMULATOR_AUTH_TOKEN)
    checker = SignatureChecker(validator)
    url = "https://dialer.example.com/twilio/status?call_id=6f1c2a4e-0d9b-4a3e-9d55-1c1e7a2b3c4d"
    params = {
        "AccountSid": SIMULATOR_ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": "CA" + "0" * 32,
        "CallStatus": "completed", "Called": "+34910000001", "Caller": "+34910000000",
        "Direction": "outbound-api", "From": "+34910000000", "To": "+34910000001",
        "CallbackSource": "call-progress-events", "SequenceNumber": "0",
        "Timestamp": "Tue, 01 Dec 2026 12:00:00 +0000", "CallDuration": "12", "SipResponseCode": "200",
        "ApiVersionDate": "2010-04-01",
    }
    signature = validator.compute_signature(url, params)
    ours = theirs = 0.0
    for _ in range(4):
        started = time.process_time()
        for _ in range(checks // 4):
            assert checker.valid(url, params, signature)
        ours += time.process_time() - started
        started = time.process_time()
        for _ in range(checks // 4):
            assert validator.validate(url, params, signature)
        theirs += time.process_time() - started
    return ours / checks * 1e6, theirs / checks * 1e6


def main() -> None:
    """Parse flags and run."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--calls", type=int, default=5000, help="calls; four callbacks each")
    parser.add_argument("--quick", action="store_true", help="1,500 calls")
    args = parser.parse_args()
    quiet()
    asyncio.run(run(1500 if args.quick else args.calls))


if __name__ == "__main__":
    main()
