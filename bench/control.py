"""Control latency while dialing at full rate: from the commit of status='paused' to
the last carrier request the simulator receives, and from the commit of
status='active' to the first, p50/p99 over many trials. The baseline is the
database's own round trip for the UPDATE that steers the campaign.

Three processes, as in production: the daemon (this one), the carrier simulator
(its own process, recording when each create request arrives), and the operator
steering the campaign (its own process, recording when each UPDATE committed), so
that neither measurement waits on the daemon's event loop. CLOCK_MONOTONIC is one
clock for every process of the host.

    .venv/bin/python bench/control.py [--trials 50] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench._common import (
    Deadline,
    Result,
    daemon_settings,
    fresh_database,
    make_campaign,
    percentile,
    postgres,
    quiet,
    recorded_writes,
    recording_simulator_process,
    report,
)
from dialer import database
from dialer.service import Daemon

RATE = 200.0  # calls/s while dialing: "full rate" for this machine
DIALING_AGAIN = 0.2  # seconds of dialing after a resume before the next pause
QUIET_AFTER_PAUSE = 0.3  # seconds watched after a pause for stray requests


def _operator_main(out: Any, url: str, campaign_id: str, count: int) -> None:
    """The operator's process: pause and resume `count` times; puts (pause commits,
    resume commits, UPDATE round trips in ms)."""

    async def steer() -> tuple[list[float], list[float], list[float]]:
        conn = await database.connect(url)
        pauses: list[float] = []
        resumes: list[float] = []
        update_ms: list[float] = []
        cid = uuid.UUID(campaign_id)
        try:
            for _ in range(count):
                await asyncio.sleep(DIALING_AGAIN)  # dialing at full rate again
                sent = time.monotonic()
                await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", cid)
                pauses.append(time.monotonic())
                update_ms.append((pauses[-1] - sent) * 1000)
                await asyncio.sleep(QUIET_AFTER_PAUSE)
                await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
                resumes.append(time.monotonic())
        finally:
            await conn.close()
        return pauses, resumes, update_ms

    out.put(asyncio.run(steer()))


@dataclass
class Trials:
    """Each trial's latencies in milliseconds, measured where the simulator received
    the create requests and where the daemon sent them (its socket write)."""

    pause_at_carrier: list[float] = field(default_factory=list)
    resume_at_carrier: list[float] = field(default_factory=list)
    pause_at_write: list[float] = field(default_factory=list)
    resume_at_write: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)


def _latencies(
    times: list[float], pauses: list[float], resumes: list[float]
) -> tuple[list[float], list[float]]:
    """Per trial: from the pause's commit to the last request before the resume, and
    from the resume's commit to the first request after it (ms)."""
    ordered = sorted(times)
    after_pause: list[float] = []
    after_resume: list[float] = []
    for paused, resumed in zip(pauses, resumes, strict=True):
        late = [t for t in ordered if paused <= t < resumed]
        after_pause.append((max(late) - paused) * 1000 if late else 0.0)
        first = next((t for t in ordered if t >= resumed), None)
        if first is not None:
            after_resume.append((first - resumed) * 1000)
    return after_pause, after_resume


async def trials(url: str, count: int) -> Trials:
    """Pause/resume `count` times, dialing at RATE."""
    conn = await database.connect(url)
    try:
        cid = await make_campaign(conn, int(RATE * count * 1.2) + 1000, status="active")
        with recording_simulator_process(seed=2) as sim, recorded_writes() as writes:
            settings = daemon_settings(
                url, sim.url, calls_per_second=RATE, bucket_size=10, max_concurrent_calls=200
            )
            daemon = Daemon(settings, db_url=url)
            try:
                await daemon.start()
                deadline = Deadline(30, "the first dials")
                while not await conn.fetchval("SELECT count(*) >= 10 FROM calls WHERE dialed_at IS NOT NULL"):
                    deadline.check()
                    await asyncio.sleep(0.05)
                ctx = multiprocessing.get_context("spawn")
                queue = ctx.Queue()
                operator = ctx.Process(target=_operator_main, args=(queue, url, str(cid), count), daemon=True)
                operator.start()
                bound = 60 + count * (DIALING_AGAIN + QUIET_AFTER_PAUSE) * 3
                pauses, resumes, update_ms = await asyncio.to_thread(queue.get, timeout=bound)
                await asyncio.to_thread(operator.join, 10)
                await asyncio.sleep(DIALING_AGAIN)  # the last resume's first request
            finally:
                await daemon.stop(drain_seconds=2)
    finally:
        await conn.close()
    out = Trials(update=update_ms)
    out.pause_at_carrier, out.resume_at_carrier = _latencies(sim.create_times, pauses, resumes)
    out.pause_at_write, out.resume_at_write = _latencies(writes, pauses, resumes)
    return out


async def run(count: int) -> None:
    """The trials on a fresh database, then the report."""
    with postgres() as server:
        async with fresh_database(server) as url:
            measured = await trials(url, count)
    base = percentile(measured.update, 50)
    rows = (
        ("pause→last request", measured.pause_at_carrier),
        ("resume→first request", measured.resume_at_carrier),
        ("pause→last request sent by the daemon", measured.pause_at_write),
        ("resume→first request sent by the daemon", measured.resume_at_write),
    )
    for name, values in rows:
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
