"""The side-loop supervisor: a crashed loop is restarted, counted and shown."""

from __future__ import annotations

import asyncio

import pytest

from dialer.metrics import Metrics
from dialer.supervisor import Supervisor


def _restarts(metrics: Metrics, loop: str) -> float:
    return float(metrics.registry.get_sample_value("dialer_loop_restarts_total", {"loop": loop}) or 0.0)


async def test_a_crashed_loop_is_restarted_counted_and_shown() -> None:
    """Two crashes, then a clean return: restarted twice, metric 2, one /readyz line naming the error type."""
    metrics = Metrics()
    supervisor = Supervisor(metrics, restart_delay=0.0)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError("boom with a +34911234567 inside")

    await asyncio.wait_for(supervisor.spawn("scheduler", flaky), timeout=5)
    assert runs == 3
    assert _restarts(metrics, "scheduler") == 2
    [line] = supervisor.detail()
    assert line.startswith("loop scheduler restarted 2 times")
    assert line.endswith("RuntimeError")
    assert "+349" not in line  # the message may carry row values: only the type is shown


async def test_a_loop_that_never_crashed_shows_nothing() -> None:
    """No crash, no detail line, no metric sample."""
    metrics = Metrics()
    supervisor = Supervisor(metrics, restart_delay=0.0)

    async def fine() -> None:
        return None

    await supervisor.spawn("listener", fine)
    assert supervisor.detail() == []
    assert _restarts(metrics, "listener") == 0


async def test_cancelling_stops_the_loop_for_good() -> None:
    """Cancellation is not a crash: the task ends cancelled and is not restarted."""
    supervisor = Supervisor(Metrics(), restart_delay=0.0)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = supervisor.spawn("listener", forever)
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert supervisor.restarts == {}
