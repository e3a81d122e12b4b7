"""Real daemon processes for the chaos tests: `python -m dialer run` configured only
through DIALER_* environment variables, started, SIGKILLed and restarted by the test,
which also owns the carrier simulator so that it outlives every daemon."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from dialer import database
from tests.harness import FROM_NUMBER, free_port

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


async def bulk_contacts(conn: asyncpg.Connection, campaign_id: object, n: int, offset: int = 0) -> None:
    """Add n contacts (numbers +3491 followed by seven digits from `offset`) to the campaign in one statement."""
    await conn.execute(
        """
        WITH c AS (
            INSERT INTO contacts (phone_number, first_name)
            SELECT '+3491' || lpad((g + $3)::text, 7, '0'), 'Contact ' || g FROM generate_series(0, $2 - 1) g
            RETURNING id
        )
        INSERT INTO campaign_contacts (campaign_id, contact_id) SELECT $1, id FROM c
        """,
        campaign_id,
        n,
        offset,
    )


async def connect_retrying(url: str, within: float = 30.0) -> asyncpg.Connection:
    """A connection, retried while the server restarts (up to `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await database.connect(url)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def wait_completed(url: str, campaign_id: object, within: float) -> None:
    """Poll (through restarts of the server) until the campaign is completed."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            conn = await connect_retrying(url)
            try:
                status = await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", campaign_id)
            finally:
                await conn.close()
            if status == "completed":
                return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"campaign not completed within {within}s")
