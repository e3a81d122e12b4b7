"""Control latency while dialing at full rate: from the commit of status='paused' to
the last carrier request the simulator receives, and from the commit of
status='active' to the first, p50/p99 over many trials. The baseline is the
database's own round trip for the UPDATE that steers the campaign.

    .venv/bin/python bench/control.py [--trials 50] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench._common import (
    Deadline,
    Result,
    daemon_settings,
    fresh_database,
    instant_simulator,
    make_campaign,
    percentile,
    postgres,
    quiet,
    report,
)
from dialer import database
from dialer.service import Daemon

RATE = 200.0  # calls/s while dialing: "full rate" for this machine
QUIET_AFTER_PAUSE = 0.3  # seconds watched after a pause for stray requests


async def trials(url: str, count: int) -> tuple[list[float], list[float], list[float]]:
    """Pause/resume `count` times; (pause→last request, resume→first request, UPDATE
    round trip) in milliseconds."""
    sim = await instant_simulator(seed=2)
    conn = await database.connect(url)
    daemon = Daemon(
        daemon_settings(url, sim.url, calls_per_second=RATE, bucket_size=10, max_concurrent_calls=200),
        db_url=url,
    )
    pause_ms: list[float] = []
    resume_ms: list[float] = []
    update_ms: list[float] = []
    try:
        cid = await make_campaign(conn, int(RATE * count * 1.2) + 1000, status="active")
        await daemon.start()
        deadline = Deadline(30 + count * 3, "control trials")
        await sim.simulator.wait_for_calls(10, within=30)
        for _ in range(count):
            deadline.check()
            await asyncio.sleep(0.2)  # dialing at full rate again
            sent = time.monotonic()
            await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", cid)
            committed = time.monotonic()
            update_ms.append((committed - sent) * 1000)
            await asyncio.sleep(QUIET_AFTER_PAUSE)
            after = [t for t in sim.simulator.create_times() if t >= committed]
            pause_ms.append((max(after) - committed) * 1000 if after else 0.0)
            seen = len(sim.simulator.create_times())
            await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
            committed = time.monotonic()
            while len(sim.simulator.create_times()) == seen:
                deadline.check()
                await asyncio.sleep(0.001)
            resume_ms.append((sim.simulator.create_times()[seen] - committed) * 1000)
    finally:
        await daemon.stop(drain_seconds=2)
        await sim.stop()
        await conn.close()
    return pause_ms, resume_ms, update_ms


async def run(count: int) -> None:
    """The trials on a fresh database, then the report."""
    with postgres() as server:
        async with fresh_database(server) as url:
            pause_ms, resume_ms, update_ms = await trials(url, count)
    base = percentile(update_ms, 50)
    for name, values in (("pause→last request", pause_ms), ("resume→first request", resume_ms)):
        for q in (50, 99):
            value = percentile(values, q)
            report(
                Result(
                    "control",
                    f"{name} p{q} ({count} trials)",
                    value,
                    "ms",
                    baseline="UPDATE round trip p50",
                    baseline_value=base,
                    ratio=value / base if base else None,
                    goal="< 50 ms" if q == 99 else "",
                    met=value < 50 if q == 99 else None,
                )
            )


def main() -> None:
    """Parse flags and run."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="50 trials")
    args = parser.parse_args()
    quiet()
    asyncio.run(run(50 if args.quick else max(50, args.trials)))


if __name__ == "__main__":
    main()
