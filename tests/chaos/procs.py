"""Real daemon processes for the chaos tests: `python -m dialer run` configured only
through DIALER_* environment variables, started, SIGKILLed and restarted by the test,
which also owns the carrier simulator so that it outlives every daemon."""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.harness import FROM_NUMBER, free_port
from tests.integration.test_schema import assert_counters_true

REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """One `dialer run` subprocess on a fixed HTTP port (kept across restarts so the
    callback URLs of calls placed before a crash still reach the next process)."""

    def __init__(
        self,
        db_url: str,
        sim_url: str,
        log_dir: Path,
        *,
        listen_url: str = "",
        env: Mapping[str, str] | None = None,
        nofile: int | None = None,
        **knobs: Any,
    ) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.starts = 0
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the process, when given
        self.proc: subprocess.Popen[bytes] | None = None
        dialer = {
            "max_concurrent_calls": 60,
            "calls_per_second": 200,
            "bucket_size": 20,
            "tick_seconds": 0.2,
            "reconcile_after_seconds": 2,
            "instance_timeout_seconds": 3,
            "drain_seconds": 2,
        }
        dialer.update(knobs)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DIALER_")},
            "DIALER_DATABASE__URL": db_url,
            "DIALER_DATABASE__LISTEN_URL": listen_url,
            "DIALER_DATABASE__POOL_MIN_SIZE": "1",
            "DIALER_DATABASE__POOL_MAX_SIZE": "8",
            "DIALER_DATABASE__KEEPALIVE_SECONDS": "1",
            "DIALER_DATABASE__CONNECT_TIMEOUT_SECONDS": "3",
            "DIALER_HTTP__PORT": str(self.port),
            "DIALER_HTTP__PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "DIALER_CARRIER__KIND": "simulator",
            "DIALER_CONSOLE__ENABLED": "false",
            "DIALER_TWILIO__API_BASE_URL": sim_url,
            "DIALER_TWILIO__FROM_NUMBER": FROM_NUMBER,
            "DIALER_LOGGING__LEVEL": "info",
            "DIALER_LOGGING__FORMAT": "json",
            **{f"DIALER_DIALER__{k.upper()}": str(v) for k, v in dialer.items()},
            **(env or {}),
        }

    @property
    def url(self) -> str:
        """Base URL of its webhook port."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where this process's stderr (its JSON log lines) goes."""
        return self.log_dir / f"daemon-{self.port}.log"

    async def start(self, within: float = 30.0) -> None:
        """Spawn and wait for /readyz (database, LISTEN and HTTP up)."""
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once
                [sys.executable, "-m", "dialer", "run"],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=self._limit_files if self.nofile else None,  # noqa: PLW1509 - setrlimit only
            )
        await self.wait_ready(within)

    async def wait_ready(self, within: float) -> float:
        """Seconds until /readyz answered 200; fails if the process died or timed out."""
        started = time.monotonic()
        deadline = started + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    async with http.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return time.monotonic() - started
                except (aiohttp.ClientError, TimeoutError, OSError):
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"daemon not ready within {within}s; see {self.log_path}")

    def _limit_files(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def sigkill(self) -> None:
        """kill -9: no drain, no cleanup, sockets dropped by the kernel."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within its drain time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.sigkill()

    @property
    def pid(self) -> int:
        """The running process's pid."""
        assert self.proc is not None
        return self.proc.pid


@contextmanager
def daemons(*procs: DaemonProcess) -> Iterator[None]:
    """Whatever happens in the test, no daemon outlives it."""
    try:
        yield
    finally:
        for p in procs:
            p.sigkill()


async def assert_campaign_invariants(
    conn: asyncpg.Connection, campaign_id: uuid.UUID, sim_calls: list[Any], max_retries: int
) -> None:
    """The invariants (docs/invariants.md) after a finished campaign: completed, every contact final, no
    overlapping live calls per contact, ≤ max_retries + 1 dials per number at the
    carrier, counters equal aggregates, and every carrier call is exactly one row."""
    assert await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", campaign_id) == "completed"
    open_contacts = await conn.fetchval(
        "SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1 "
        "AND call_status IN ('pending', 'scheduled', 'in_progress')",
        campaign_id,
    )
    assert open_contacts == 0
    live = await conn.fetchval("SELECT count(*) FROM calls WHERE status IN ('scheduled', 'pending', 'in_progress')")
    assert live == 0
    per_number: dict[str, int] = {}
    for call in sim_calls:
        per_number[call.to] = per_number.get(call.to, 0) + 1
    assert max(per_number.values(), default=0) <= max_retries + 1, max(per_number.values())
    rows = await conn.fetch("SELECT call_sid FROM calls WHERE call_sid IS NOT NULL")
    ours = sorted(r["call_sid"] for r in rows)
    theirs = sorted(c.sid for c in sim_calls)
    missing = set(theirs) - set(ours)
    assert not missing, f"{len(missing)} carrier calls have no row: {sorted(missing)[:5]}"
    assert ours == theirs
    rows = await conn.fetch(
        "SELECT contact_id, dialed_at, ended_at FROM calls WHERE dialed_at IS NOT NULL "
        "ORDER BY contact_id, dialed_at"
    )
    previous: dict[uuid.UUID, Any] = {}
    for r in rows:
        assert r["ended_at"] is not None
        if r["contact_id"] in previous:
            assert r["dialed_at"] >= previous[r["contact_id"]], "two live calls overlapped for one contact"
        previous[r["contact_id"]] = r["ended_at"]
    by_number: dict[str, list[Any]] = {}
    for call in sim_calls:
        by_number.setdefault(call.to, []).append(call)
    for number, calls in by_number.items():
        calls.sort(key=lambda c: c.created_at)
        for before, after in itertools.pairwise(calls):
            assert before.end_time is not None and before.end_time <= after.created_wall, (
                f"{number}: the carrier saw two overlapping calls"
            )
    await assert_counters_true(conn)
