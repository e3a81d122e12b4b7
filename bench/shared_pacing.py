"""Shared pacing: one, two and three instances on one database at calls_per_second 10
and 100 (each instance configured with that same rate, as an operator would), for a
bounded run each: the dial rate the carrier observes summed over the instances, and
the worst one-second window, beside the configured rate and its bound (rate +
bucket_size); then what the coordination costs per dial: statements taking slots
(`dialer_take_dial_slots`) per dial, and the time one such statement takes.

The instances are `Daemon`s in this one process (one event loop, like the simulator
they share), so each one's pacer can be read directly; the database is what they
share, as separate processes would.

    .venv/bin/python -m bench.shared_pacing [--seconds 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field

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
from dialer.models import DialSlots
from dialer.service import Daemon
from tests.invariants import worst_window

BUCKET = 1  # the default bucket_size


@dataclass
class Run:
    """What one configuration measured."""

    observed: float
    worst: int
    dials: list[int]  # per instance, over the whole run
    statements: int
    dropped: int
    grant_ms: list[float] = field(default_factory=list)


def _time_grants(daemon: Daemon, into: list[float]) -> None:
    """Record how long each slot statement of this daemon takes (ms, end to end)."""
    store = daemon.store
    original = store.take_dial_slots

    async def timed(
        campaign_id: uuid.UUID | None, want: int, *, rate: float, horizon: float, live_within: float
    ) -> DialSlots:
        began = time.perf_counter()
        try:
            return await original(campaign_id, want, rate=rate, horizon=horizon, live_within=live_within)
        finally:
            into.append((time.perf_counter() - began) * 1000)

    store.take_dial_slots = timed  # type: ignore[method-assign]


async def shared_rate(url: str, rate: float, instances: int, seconds: float) -> Run:
    """`instances` daemons dial one large campaign at `rate` for `seconds` after the
    first dial; the simulator's arrivals are the measurement."""
    sim = await instant_simulator(seed=1)
    conn = await database.connect(url)
    daemons = [
        Daemon(
            daemon_settings(
                url, sim.url, calls_per_second=rate, bucket_size=BUCKET, max_concurrent_calls=200,
                instance_timeout_seconds=30.0,
            ),
            db_url=url,
        )
        for _ in range(instances)
    ]
    grant_ms: list[float] = []
    try:
        cid = await make_campaign(conn, math.ceil(rate * seconds * 1.5) + 10)
        for daemon in daemons:
            await daemon.start()
            _time_grants(daemon, grant_ms)
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
        deadline = Deadline(seconds + 30, f"{instances} instances at {rate}/s")
        while len(sim.simulator.create_times()) < 2:  # the measurement starts at the first dial
            deadline.check()
            await asyncio.sleep(0.01)
        first = sim.simulator.create_times()[0]
        await asyncio.sleep(max(0.0, first + seconds - asyncio.get_running_loop().time()))
        times = [t for t in sim.simulator.create_times() if t <= first + seconds]
        pacers = [d.pool.pacer for d in daemons]
        dials = [p.dials for p in pacers]
        statements = sum(p.grants for p in pacers)
        dropped = sum(p.dropped for p in pacers)
    finally:
        for daemon in daemons:
            await daemon.stop(drain_seconds=2)
        await sim.stop()
        await conn.close()
    observed = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return Run(observed, worst_window(times), dials, statements, dropped, grant_ms)


async def run(rates: list[float], counts: list[int], seconds: float) -> None:
    """Each configuration on a fresh database of one server."""
    with postgres() as server:
        for rate in rates:
            for n in counts:
                async with fresh_database(server) as url:
                    r = await shared_rate(url, rate, n, seconds)
                bound = math.floor(rate + BUCKET)
                label = f"{n} instance{'s' if n > 1 else ''} at {rate:g}/s"
                report(
                    Result(
                        "shared_pacing",
                        f"summed dial rate, {label} ({seconds:g} s)",
                        r.observed,
                        "calls/s",
                        baseline="configured",
                        baseline_value=rate,
                        ratio=r.observed / rate,
                        goal="1.00 ± 0.02",
                        met=abs(r.observed - rate) / rate <= 0.02,
                    )
                )
                report(
                    Result(
                        "shared_pacing",
                        f"worst 1 s window, {label}",
                        r.worst,
                        "calls",
                        baseline="rate + bucket",
                        baseline_value=bound,
                        ratio=r.worst / bound,
                        goal="<= 1.00",
                        met=r.worst <= bound,
                    )
                )
                per_dial = r.statements / max(1, sum(r.dials))
                report(
                    Result(
                        "shared_pacing",
                        f"slot statements per dial, {label}",
                        per_dial,
                        "stmt",
                        goal="<= 0.25",
                        met=per_dial <= 0.25,
                    )
                )
                for q in (50, 99):
                    ms = percentile(r.grant_ms, q)
                    report(Result("shared_pacing", f"slot statement p{q}, {label}", ms, "ms"))
                print(f"  (dials per instance {r.dials}, slots let go {r.dropped})")


def main() -> None:
    """Parse flags and run."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per configuration")
    parser.add_argument("--quick", action="store_true", help="5 s per configuration")
    args = parser.parse_args()
    quiet()
    asyncio.run(run([10.0, 100.0], [1, 2, 3], 5.0 if args.quick else args.seconds))


if __name__ == "__main__":
    main()
