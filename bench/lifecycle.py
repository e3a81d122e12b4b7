"""Complete call lifecycles per second (claim → carrier request → callbacks → final
state) with no pacing limit and a simulator that answers instantly, the database
transactions each call costs, and claim→end latency — beside two same-run baselines:
pgbench's one-statement UPDATE TPS on the same server, and procrastinate draining the
same number of no-op jobs.

    .venv/bin/python bench/lifecycle.py [--contacts 20000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

from bench._common import (
    Deadline,
    Result,
    daemon_settings,
    fresh_database,
    make_campaign,
    next_xid,
    percentile,
    pgbench_update_tps,
    postgres,
    quiet,
    report,
    simulator_process,
    xact_commits,
)
from dialer import database
from dialer.service import Daemon

RUN_BOUND = 300.0  # seconds any one measured run may take


async def procrastinate_noop_jobs_per_second(url: str, jobs: int, concurrency: int = 10) -> float:
    """Defer `jobs` no-op jobs, then time one worker draining them (it stops when
    the queue is empty). Same server, same machine, same moment."""
    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url, min_size=2, max_size=concurrency + 2)
    )

    @app.task(name="noop")
    async def noop() -> None:
        """The job does nothing: only the queue's own cost is measured."""

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        batch: list[dict[str, Any]] = [{} for _ in range(1000)]
        for start in range(0, jobs, len(batch)):
            await noop.batch_defer_async(*batch[: min(len(batch), jobs - start)])
        started = time.monotonic()
        await asyncio.wait_for(
            app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False),
            RUN_BOUND,
        )
        elapsed = time.monotonic() - started
    return jobs / elapsed


def _time_calls(daemon: Daemon) -> list[float]:
    """Claim→final latency of every call, in-process: from the moment the claimed call
    is handed to the pool to the moment its coroutine ends (final state committed and
    heard). The rows' ended_at comes from the carrier's 1-second-resolution Timestamp,
    too coarse for this."""
    latencies: list[float] = []
    pool = daemon.pool
    original = pool.start

    def start(call: Any) -> None:
        began = time.monotonic()
        original(call)
        task = pool._tasks[call.id]
        task.add_done_callback(lambda _t: latencies.append((time.monotonic() - began) * 1000))

    pool.start = start  # type: ignore[method-assign]
    return latencies


async def dialer_lifecycles(url: str, sim_url: str, contacts: int, max_concurrent: int) -> dict[str, float]:
    """One daemon runs a campaign of `contacts` to its end against an instant
    simulator; returns calls/s, transactions per call and latency percentiles."""
    conn = await database.connect(url)
    daemon = Daemon(daemon_settings(url, sim_url, max_concurrent_calls=max_concurrent), db_url=url)
    try:
        cid = await make_campaign(conn, contacts)
        await daemon.start()
        latencies = _time_calls(daemon)
        await asyncio.sleep(0.5)  # let the first housekeeping pass settle
        before = await xact_commits(conn)
        xid_before = await next_xid(conn)
        started = time.monotonic()
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
        deadline = Deadline(RUN_BOUND, f"{contacts} lifecycles")
        while True:
            done = await conn.fetchval(
                "SELECT successful_calls + failed_calls FROM campaigns WHERE id = $1", cid
            )
            if done >= contacts:
                break
            deadline.check()
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        after = await xact_commits(conn)
        xid_after = await next_xid(conn)
        wrong = await conn.fetchval(
            "SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1 AND call_status <> 'completed'",
            cid,
        )
        if wrong:
            raise AssertionError(f"{wrong} contacts did not end completed")
    finally:
        await daemon.stop(drain_seconds=5)
        await conn.close()
    return {
        "per_second": contacts / elapsed,
        "seconds": elapsed,
        "xacts_per_call": (after - before) / contacts,
        "writes_per_call": (xid_after - xid_before) / contacts,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "peak_live": float(daemon.pool.peak_live),
    }


async def run(contacts: int, max_concurrent: int, pgbench_seconds: float, baselines: bool = True) -> None:
    """All three measurements on one server, then the report."""
    tps = jobs = float("nan")
    with postgres() as server:
        if baselines:
            async with fresh_database(server, migrated=False) as url:
                tps = await asyncio.to_thread(pgbench_update_tps, url, pgbench_seconds)
            async with fresh_database(server, migrated=False) as url:
                jobs = await procrastinate_noop_jobs_per_second(url, contacts)
        with simulator_process(instant=True) as sim_url:
            async with fresh_database(server) as url:
                d = await dialer_lifecycles(url, sim_url, contacts, max_concurrent)
    report(Result("lifecycle", "pgbench 1-stmt UPDATE", tps, "tps"))
    report(Result("lifecycle", "procrastinate no-op jobs", jobs, "jobs/s"))
    report(
        Result(
            "lifecycle",
            f"call lifecycles ({contacts:,} contacts)",
            d["per_second"],
            "calls/s",
            baseline="procrastinate jobs/s",
            baseline_value=jobs,
            ratio=d["per_second"] / jobs,
            goal=">= 2.00",
            met=d["per_second"] / jobs >= 2.0,
        )
    )
    report(
        Result(
            "lifecycle",
            "write transactions per call (xids)",
            d["writes_per_call"],
            "xact",
            goal="<= 4",
            met=d["writes_per_call"] <= 4.0,
        )
    )
    report(
        Result(
            "lifecycle",
            "pg_stat xact_commit per call",
            d["xacts_per_call"],
            "xact",
            baseline="pgbench tps",
            baseline_value=tps,
            ratio=d["per_second"] * d["xacts_per_call"] / tps,
        )
    )
    report(Result("lifecycle", "claim→end p50", d["p50_ms"], "ms"))
    report(Result("lifecycle", "claim→end p99", d["p99_ms"], "ms"))
    print(
        f"  ({contacts:,} calls in {d['seconds']:.1f} s, peak live calls {d['peak_live']:.0f};"
        f" the DB-ratio is the share of pgbench's TPS the dialer's commits used)"
    )


def main() -> None:
    """Parse flags and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--max-concurrent", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="CI size: 3,000 contacts, short pgbench")
    parser.add_argument("--no-baselines", action="store_true", help="the dialer only (for profiling)")
    args = parser.parse_args()
    quiet()
    contacts = 3000 if args.quick else args.contacts
    asyncio.run(run(contacts, args.max_concurrent, 3.0 if args.quick else 5.0, not args.no_baselines))


if __name__ == "__main__":
    main()
