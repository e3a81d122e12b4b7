"""Fixtures of the chaos suite: a simulator owned by the test (it outlives the
daemons it serves), and a directory for the daemons' logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dialer.carrier.simulator import (
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    RunningSimulator,
    start_simulator,
)
from dialer.config import SimulatorSettings

CHAOS_SIM = SimulatorSettings(
    min_latency_ms=0, max_latency_ms=10, min_duration_seconds=1, max_duration_seconds=5,
    time_scale=0.02, seed=20240607,
)


@pytest.fixture
async def chaos_sim() -> AsyncIterator[RunningSimulator]:
    """A carrier simulator on loopback, in the test's process and loop."""
    running = await start_simulator(CHAOS_SIM, account_sid=SIMULATOR_ACCOUNT_SID, auth_token=SIMULATOR_AUTH_TOKEN)
    yield running
    await running.stop()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where daemon subprocesses write their logs (printed on failure by pytest's tmp_path)."""
    return tmp_path
