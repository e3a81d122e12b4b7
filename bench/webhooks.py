"""Signed status callbacks per second a running daemon sustains, with p50/p99, from a
load generator in its own process holding 50 connections; beside a bare aiohttp
handler that parses the same form and runs one UPDATE per request, in the same run.

Each call gets Twilio's four callbacks in order (initiated, ringing, in-progress,
completed) for calls held by another live instance, so every callback goes through
signature validation and the store: the worst case for this daemon (the calls it
dials itself absorb the three non-final ones in memory).

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


def _load_main(out: Any, base_url: str, public_url: str, calls: list[tuple[str, str]]) -> None:
    """Child process: sign everything first, then send with CONNECTIONS workers; each
    worker plays one call's callbacks in order. Puts (elapsed, latencies, errors)."""
    import aiohttp

    work = _requests(public_url, calls)

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


def load(base_url: str, public_url: str, calls: list[tuple[str, str]]) -> tuple[float, list[float], int]:
    """Run the load generator in its own process and wait for its figures."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_main, args=(queue, base_url, public_url, calls), daemon=True)
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
