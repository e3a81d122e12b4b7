"""What the operator console's live pages cost the dialing engine: complete call
lifecycles per second, and the process's CPU time per call, of one daemon (console
on) running a campaign to its end against an instant simulator, with no browser open
and with 50 open server-sent-event streams (board and campaign page) read by another
process. Also: how many LISTEN connections the database sees while the 50 streams
are open (the console must add none), and how many snapshots the console took.

The machine is shared, so the comparison is paired: each round runs both cases back
to back (in ABBA order over rounds, so a drift in the background load hits both
alike), and the figure is the median of the rounds' ratios.

    .venv/bin/python -m bench.console [--contacts 10000] [--clients 50] [--rounds 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from typing import Any

from bench._common import (
    Deadline,
    Result,
    daemon_settings,
    fresh_database,
    make_campaign,
    postgres,
    quiet,
    report,
    simulator_process,
)
from dialer import database
from dialer.config import ConsoleSettings
from dialer.service import Daemon

RUN_BOUND = 300.0  # seconds any one measured run may take


def _clients_main(urls: list[str], ready: Any, stop: Any, out: Any) -> None:
    """Child process: hold one SSE stream per URL open, counting events, until `stop`."""
    import aiohttp

    async def follow(
        http: aiohttp.ClientSession, url: str, counts: list[int], all_open: asyncio.Event
    ) -> None:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as stream:
            counts[1] += 1
            if counts[1] == len(urls):
                all_open.set()
            async for line in stream.content:
                if line.startswith(b"event:"):
                    counts[0] += 1

    async def main() -> None:
        counts = [0, 0]  # events, streams open
        all_open = asyncio.Event()
        async with aiohttp.ClientSession() as http:
            tasks = [asyncio.create_task(follow(http, url, counts, all_open)) for url in urls]
            await all_open.wait()
            ready.set()
            await asyncio.to_thread(stop.wait)  # a multiprocessing Event: wait off the loop
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        out.put(counts[0])

    asyncio.run(main())


async def _listeners(conn: Any) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'LISTEN %' AND pid <> pg_backend_pid()"
        )
    )


async def one_run(url: str, sim_url: str, contacts: int, clients: int) -> dict[str, float]:
    """A campaign of `contacts` run to its end by one daemon with its console on, while
    `clients` SSE streams (half on the board, half on the campaign's page) are open."""
    conn = await database.connect(url)
    settings = daemon_settings(url, sim_url, max_concurrent_calls=200)
    settings = settings.model_copy(update={"console": ConsoleSettings(port=0, refresh_seconds=1.0)})
    daemon = Daemon(settings, db_url=url)
    ctx = multiprocessing.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = None
    try:
        cid = await make_campaign(conn, contacts)
        await daemon.start()
        assert daemon.console is not None
        if clients:
            base = daemon.console.url
            board, page = f"{base}/events/board", f"{base}/events/campaigns/{cid}"
            urls = [board if i % 2 else page for i in range(clients)]
            proc = ctx.Process(target=_clients_main, args=(urls, ready, stop, out), daemon=True)
            proc.start()
            if not await asyncio.to_thread(ready.wait, 60):
                raise TimeoutError("the SSE clients did not connect")
        await asyncio.sleep(0.5)  # let the first housekeeping pass settle
        renders_before = daemon.console.hub.renders
        listeners = await _listeners(conn)
        started = time.monotonic()
        cpu_started = time.process_time()  # the daemon (and this driver) run in this process
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
        deadline = Deadline(RUN_BOUND, f"{contacts} lifecycles")
        peak_listeners = listeners
        while True:
            done = await conn.fetchval(
                "SELECT successful_calls + failed_calls FROM campaigns WHERE id = $1", cid
            )
            if done >= contacts:
                break
            deadline.check()
            await asyncio.sleep(0.05)
            peak_listeners = max(peak_listeners, await _listeners(conn))
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu_started
        renders = daemon.console.hub.renders - renders_before
        streams = daemon.console.hub.clients
    finally:
        stop.set()
        events = 0
        if proc is not None:
            events = await asyncio.to_thread(out.get, True, 30)
            proc.join(10)
        await daemon.stop(drain_seconds=5)
        await conn.close()
    return {
        "per_second": contacts / elapsed,
        "seconds": elapsed,
        "cpu_ms_per_call": 1000 * cpu / contacts,
        "listeners": float(peak_listeners),
        "renders_per_second": renders / elapsed,
        "streams": float(streams),
        "events": float(events),
    }


async def run(contacts: int, clients: int, rounds: int) -> None:
    """Paired rounds without and with clients, ABBA order."""
    without: list[dict[str, float]] = []
    with_clients: list[dict[str, float]] = []
    with postgres() as server, simulator_process(instant=True) as sim_url:
        for i in range(rounds):
            order = ((0, without), (clients, with_clients))
            for n, results in order if i % 2 == 0 else reversed(order):
                async with fresh_database(server) as url:
                    results.append(await one_run(url, sim_url, contacts, n))
    base = statistics.median(r["per_second"] for r in without)
    loaded = statistics.median(r["per_second"] for r in with_clients)
    ratios = [w["per_second"] / b["per_second"] for b, w in zip(without, with_clients, strict=True)]
    change = statistics.median(ratios) - 1
    report(Result("console", f"lifecycles/s, no console clients ({contacts:,})", base, "calls/s"))
    report(
        Result(
            "console",
            f"lifecycles/s, {clients} SSE clients open",
            loaded,
            "calls/s",
            baseline="no clients",
            baseline_value=base,
            ratio=1 + change,
            goal="change < 5 %",
            met=change > -0.05,
        )
    )
    cpu_base = statistics.median(r["cpu_ms_per_call"] for r in without)
    cpu_loaded = statistics.median(r["cpu_ms_per_call"] for r in with_clients)
    report(
        Result(
            "console",
            f"daemon CPU per call, {clients} SSE clients",
            cpu_loaded,
            "ms",
            baseline="no clients",
            baseline_value=cpu_base,
            ratio=cpu_loaded / cpu_base,
        )
    )
    listeners = max(r["listeners"] for r in with_clients)
    report(
        Result("console", "LISTEN connections seen (max)", listeners, "conns", goal="= 1", met=listeners == 1)
    )
    report(
        Result(
            "console",
            "console snapshots per second",
            statistics.median(r["renders_per_second"] for r in with_clients),
            "renders/s",
        )
    )
    pairs = ", ".join(
        f"{b['per_second']:.0f}/{w['per_second']:.0f}" for b, w in zip(without, with_clients, strict=True)
    )
    print(
        f"  {rounds} paired rounds (without/with calls/s): {pairs}; ratio = median of the pairs' ratios,"
        f" change {100 * change:+.1f} %; {max(r['streams'] for r in with_clients):.0f} streams open,"
        f" {sum(r['events'] for r in with_clients):.0f} events delivered"
    )


def main() -> None:
    """Parse flags and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="CI size: 3,000 contacts, one round")
    args = parser.parse_args()
    quiet()
    contacts, rounds = (3000, 1) if args.quick else (args.contacts, args.rounds)
    asyncio.run(run(contacts, args.clients, rounds))


if __name__ == "__main__":
    main()
