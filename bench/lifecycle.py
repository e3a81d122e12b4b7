"""Complete call lifecycles (claim → carrier request → callbacks → final state) with
no pacing limit and a simulator that answers instantly, in its own process — beside
procrastinate draining the same number of no-op jobs, on the same server, in the same
run, rounds interleaved (ABBA) so machine load hits both alike.

Primary figures (steady on a shared machine): the process CPU time per lifecycle
and per job (psutil: user + system time of this process over the measured span —
the daemon runs in this process and the simulator does not; procrastinate's worker
runs in this process too), and the transactions per call (exact: see
`daemon_transactions`). Throughput ratios and claim→end latency come beside them.

    .venv/bin/python -m bench.lifecycle [--contacts 20000] [--quick] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil

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
)
from dialer import database
from dialer.carrier import twilio as twilio_carrier
from dialer.service import Daemon

RUN_BOUND = 300.0  # seconds any one measured run may take


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread)."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


@dataclass
class Span:
    """Wall time and process CPU time of one measured span."""

    wall: float = 0.0
    cpu: float = 0.0

    @classmethod
    def measure(cls) -> Callable[[], Span]:
        """Start now; the returned callable ends the span."""
        wall, cpu = time.monotonic(), cpu_seconds()
        return lambda: cls(time.monotonic() - wall, cpu_seconds() - cpu)


async def procrastinate_noop_jobs(url: str, jobs: int, concurrency: int = 10) -> Span:
    """Defer `jobs` no-op jobs, then measure one worker draining them (it stops when
    the queue is empty): the wall time and this process's CPU time while it runs."""
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
        end = Span.measure()
        await asyncio.wait_for(
            app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False),
            RUN_BOUND,
        )
        return end()


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


class CountingConnection:
    """The bench's own connection, counting the transactions it commits (each
    statement outside a transaction block is one) so they can be taken out of the
    database's total."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements = 0

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """One autocommit statement, counted."""
        self.statements += 1
        return await self.conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        """One autocommit statement, counted."""
        self.statements += 1
        return await self.conn.execute(sql, *args)


async def _committed(url: str) -> int:
    """xact_commit of the database once every other backend on it has exited: a
    backend flushes its counters when it exits, but only about once a second while it
    runs (so a difference taken mid-run drifts). The reading's own transaction is not
    yet in the figure it reads."""
    conn = await database.connect(url)
    try:
        deadline = Deadline(30, "backends to exit")
        while await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ):
            deadline.check()
            await asyncio.sleep(0.05)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(value) + 3  # this connection's three statements, flushed at its exit


async def dialer_lifecycles(url: str, sim_url: str, contacts: int, max_concurrent: int) -> dict[str, float]:
    """One daemon runs a campaign of `contacts` to its end against an instant
    simulator; returns calls/s, CPU per call, transactions per call and latency."""
    setup = await database.connect(url)
    try:
        cid = await make_campaign(setup, contacts)
    finally:
        await setup.close()
    committed_before = await _committed(url)
    conn = CountingConnection(await database.connect(url))
    daemon = Daemon(daemon_settings(url, sim_url, max_concurrent_calls=max_concurrent), db_url=url)
    try:
        await daemon.start()
        latencies = _time_calls(daemon)
        await asyncio.sleep(0.5)  # let the first housekeeping pass settle
        xid_before = await next_xid(conn.conn)
        conn.statements += 1
        end = Span.measure()
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
        deadline = Deadline(RUN_BOUND, f"{contacts} lifecycles")
        while True:
            done = await conn.fetchval(
                "SELECT successful_calls + failed_calls FROM campaigns WHERE id = $1", cid
            )
            if done >= contacts:
                break
            deadline.check()
            await asyncio.sleep(0.05)
        span = end()
        xid_after = await next_xid(conn.conn)
        conn.statements += 1
        wrong = await conn.fetchval(
            "SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1 AND call_status <> 'completed'",
            cid,
        )
        if wrong:
            raise AssertionError(f"{wrong} contacts did not end completed")
    finally:
        await daemon.stop(drain_seconds=5)
        await conn.conn.close()
    committed_after = await _committed(url)
    daemon_xacts = committed_after - committed_before - conn.statements
    return {
        "per_second": contacts / span.wall,
        "seconds": span.wall,
        "cpu_ms": span.cpu / contacts * 1000,
        "xacts_per_call": daemon_xacts / contacts,
        "writes_per_call": (xid_after - xid_before) / contacts,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "peak_live": float(daemon.pool.peak_live),
    }


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


async def run(
    contacts: int, max_concurrent: int, rounds: int, pgbench_seconds: float, baselines: bool = True
) -> None:
    """`rounds` pairs of (procrastinate, dialer) on one server, in ABBA order, then
    the report: medians, each round's figures printed as they come."""
    tps = float("nan")
    dialer: list[dict[str, float]] = []
    jobs: list[Span] = []
    load_before = os.getloadavg()
    with postgres() as server:
        if baselines and pgbench_seconds > 0:
            async with fresh_database(server, migrated=False) as url:
                tps = await asyncio.to_thread(pgbench_update_tps, url, pgbench_seconds)
        with simulator_process(instant=True) as sim_url:
            for n in range(rounds):
                order = ("jobs", "dialer") if n % 2 == 0 else ("dialer", "jobs")
                for what in order:
                    if what == "jobs" and baselines:
                        async with fresh_database(server, migrated=False) as url:
                            span = await procrastinate_noop_jobs(url, contacts)
                        jobs.append(span)
                        print(
                            f"  round {n + 1}: procrastinate {contacts / span.wall:,.0f} jobs/s,"
                            f" {span.cpu / contacts * 1000:.2f} ms CPU per job"
                        )
                    elif what == "dialer":
                        async with fresh_database(server) as url:
                            d = await dialer_lifecycles(url, sim_url, contacts, max_concurrent)
                        dialer.append(d)
                        print(
                            f"  round {n + 1}: dialer {d['per_second']:,.0f} calls/s,"
                            f" {d['cpu_ms']:.2f} ms CPU per call, {d['xacts_per_call']:.2f} xact/call,"
                            f" {d['writes_per_call']:.2f} writes/call,"
                            f" p50/p99 {d['p50_ms']:.0f}/{d['p99_ms']:.0f} ms"
                        )
    load_after = os.getloadavg()
    job_rate = statistics.median(contacts / s.wall for s in jobs) if jobs else float("nan")
    job_cpu = statistics.median(s.cpu / contacts * 1000 for s in jobs) if jobs else float("nan")
    rate, cpu = _median(dialer, "per_second"), _median(dialer, "cpu_ms")
    report(Result("lifecycle", "pgbench 1-stmt UPDATE", tps, "tps"))
    report(Result("lifecycle", "procrastinate no-op jobs", job_rate, "jobs/s"))
    report(Result("lifecycle", "procrastinate worker CPU per job", job_cpu, "ms"))
    report(
        Result(
            "lifecycle", "daemon CPU per lifecycle", cpu, "ms",
            baseline="procrastinate CPU/job", baseline_value=job_cpu, ratio=cpu / job_cpu,
            goal="<= 1.5", met=cpu / job_cpu <= 1.5,
        )
    )
    report(
        Result(
            "lifecycle", f"call lifecycles ({contacts:,} contacts)", rate, "calls/s",
            baseline="procrastinate jobs/s", baseline_value=job_rate, ratio=rate / job_rate,
            goal=">= 1.00", met=rate / job_rate >= 1.0,
        )
    )
    writes = _median(dialer, "writes_per_call")
    report(
        Result(
            "lifecycle", "write transactions per call (xids)", writes, "xact", goal="<= 2", met=writes <= 2
        )
    )
    xacts = _median(dialer, "xacts_per_call")
    report(
        Result(
            "lifecycle", "committed transactions per call", xacts, "xact",
            baseline="pgbench tps", baseline_value=tps, goal="<= 3", met=xacts <= 3,
        )
    )
    report(Result("lifecycle", "claim→end p50", _median(dialer, "p50_ms"), "ms"))
    report(Result("lifecycle", "claim→end p99", _median(dialer, "p99_ms"), "ms"))
    print(
        f"  (medians of {rounds} round(s); {contacts:,} calls per round, peak live calls"
        f" {max(d['peak_live'] for d in dialer):.0f}; status callbacks asked for:"
        f" {', '.join(twilio_carrier.STATUS_EVENTS)}; load average before/after"
        f" {load_before[0]:.2f}/{load_after[0]:.2f})"
    )


def main() -> None:
    """Parse flags and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--max-concurrent", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved (procrastinate, dialer) pairs")
    parser.add_argument("--quick", action="store_true", help="CI size: 3,000 contacts, short pgbench")
    parser.add_argument("--no-baselines", action="store_true", help="the dialer only (for profiling)")
    parser.add_argument(
        "--status-events",
        help="comma-separated StatusCallbackEvent list to ask Twilio for, instead of the"
        " daemon's own (to measure what each callback costs)",
    )
    args = parser.parse_args()
    quiet()
    if args.status_events is not None:
        # Bench-only: what the daemon asks for is a module constant of the carrier.
        twilio_carrier.STATUS_EVENTS = tuple(e for e in args.status_events.split(",") if e)
    contacts = 3000 if args.quick else args.contacts
    pgbench = 0.0 if args.no_baselines else (3.0 if args.quick else 5.0)
    asyncio.run(run(contacts, args.max_concurrent, args.rounds, pgbench, not args.no_baselines))


if __name__ == "__main__":
    main()
