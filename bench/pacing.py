"""Pacing: at calls_per_second 1, 10 and 100, the dial rate the carrier observes and
the worst one-second window, for a bounded run per rate, with one instance. The
baseline is the configured rate itself (the pacer's promise); the bound for any
one-second window is rate + bucket_size.

The simulator runs in its own process, as the carrier is elsewhere in production:
in the daemon's process its work (answering each create, signing and sending each
status callback) would take the daemon's event loop from the calls it paces.

The worst window is measured three times: at the pacer (the moment the daemon is
allowed to dial), at the daemon's socket write (aiohttp has sent the create
request's headers: the last moment the daemon controls), and at the simulator
(arrival of the create request as its process reads it: that plus the loopback and
the simulator's own scheduling, which on a loaded 2-core machine can bunch requests
the daemon sent spaced out). Several instances sharing the rate:
bench/shared_pacing.py.

    .venv/bin/python bench/pacing.py [--seconds 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from bench._common import (
    Deadline,
    Result,
    daemon_settings,
    fresh_database,
    make_campaign,
    postgres,
    quiet,
    recorded_writes,
    recording_simulator_process,
    report,
)
from dialer import database
from dialer.pacing import Slot
from dialer.service import Daemon
from tests.invariants import worst_window  # invariant 9's measure, one definition

BUCKET = 1  # the default bucket_size


def _record_grants(daemon: Daemon) -> list[float]:
    """Monotonic times at which the daemon's pacer let a request go (settled on its slot)."""
    grants: list[float] = []
    pacer = daemon.pool.pacer
    original = pacer.settle

    async def settle(slot: Slot, *, last_try: bool = False) -> bool:
        on_time = await original(slot, last_try=last_try)
        if on_time or last_try:
            grants.append(time.monotonic())
        return on_time

    pacer.settle = settle  # type: ignore[method-assign]
    return grants


async def one_rate(url: str, rate: float, seconds: float) -> tuple[float, int, int, int]:
    """Dial a large campaign at `rate` for `seconds`; (observed rate, worst window at
    the simulator, at the pacer, and at the daemon's socket write, over the same span)."""
    conn = await database.connect(url)
    try:
        with recording_simulator_process(seed=1) as sim, recorded_writes() as writes:
            settings = daemon_settings(
                url, sim.url, calls_per_second=rate, bucket_size=BUCKET, max_concurrent_calls=200
            )
            daemon = Daemon(settings, db_url=url)
            try:
                await make_campaign(conn, math.ceil(rate * seconds * 1.5) + 10, status="active")
                await daemon.start()
                grants = _record_grants(daemon)
                deadline = Deadline(seconds + 30, f"pacing at {rate}/s")
                while len(grants) < 2:  # the measurement starts at the first dial
                    deadline.check()
                    await asyncio.sleep(0.01)
                # A second more than measured: the simulator's list ends with the span.
                await asyncio.sleep(max(0.0, grants[0] + seconds + 1.0 - time.monotonic()))
                granted = list(grants)
                written = list(writes)
            finally:
                await daemon.stop(drain_seconds=2)
    finally:
        await conn.close()
    first = sim.create_times[0]
    times = [t for t in sim.create_times if t <= first + seconds]
    observed = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    # The pacer's grants over a span as long as the measured one (grants lead arrivals).
    span = [t for t in granted if granted and t <= granted[0] + seconds]
    sent = [t for t in written if written and t <= written[0] + seconds]
    return observed, worst_window(times), worst_window(span), worst_window(sent)


async def run(rates: list[float], seconds: float) -> None:
    """Each rate on a fresh database of one server."""
    with postgres() as server:
        for rate in rates:
            async with fresh_database(server) as url:
                observed, worst, at_pacer, at_write = await one_rate(url, rate, seconds)
            error = (observed - rate) / rate
            report(
                Result(
                    "pacing",
                    f"dial rate at {rate:g}/s ({seconds:g} s)",
                    observed,
                    "calls/s",
                    baseline="configured",
                    baseline_value=rate,
                    ratio=observed / rate,
                    goal="1.00 ± 0.02",
                    met=abs(error) <= 0.02,
                )
            )
            bound = math.ceil(rate) + BUCKET
            windows = (
                ("at the simulator", worst),
                ("at the pacer", at_pacer),
                ("at the daemon's socket write", at_write),
            )
            for where, value in windows:
                report(
                    Result(
                        "pacing",
                        f"worst 1 s window {where} {rate:g}/s",
                        value,
                        "calls",
                        baseline="rate + bucket",
                        baseline_value=bound,
                        ratio=value / bound,
                        goal="<= 1.00",
                        met=value <= bound,
                    )
                )


def main() -> None:
    """Parse flags and run."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per rate")
    parser.add_argument("--quick", action="store_true", help="8 s per rate")
    args = parser.parse_args()
    quiet()
    asyncio.run(run([1.0, 10.0, 100.0], 8.0 if args.quick else args.seconds))


if __name__ == "__main__":
    main()
