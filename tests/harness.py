"""Running real daemons in tests: settings for loopback, a free port, polling."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dialer.config import (
    CarrierSettings,
    ConsoleSettings,
    DatabaseSettings,
    DialerSettings,
    HttpSettings,
    LoggingSettings,
    Settings,
    SimulatorSettings,
    TwilioSettings,
)

FROM_NUMBER = "+34910000000"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_settings(db_url: str, simulator_url: str | None = None, **dialer: Any) -> Settings:
    """Settings for one daemon on loopback: its own HTTP port, the given simulator
    (or an in-process one), and the dialer knobs given."""
    port = free_port()
    twilio: dict[str, Any] = {"from_number": FROM_NUMBER}
    if simulator_url:
        twilio["api_base_url"] = simulator_url
    knobs: dict[str, Any] = {"calls_per_second": 200.0, "bucket_size": 20, "tick_seconds": 0.2}
    knobs.update(dialer)
    return Settings(
        database=DatabaseSettings(url=SecretStr(db_url), pool_min_size=1, pool_max_size=8, keepalive_seconds=1.0),
        http=HttpSettings(port=port, public_url=f"http://127.0.0.1:{port}"),
        carrier=CarrierSettings(kind="simulator"),
        twilio=TwilioSettings(**twilio),
        simulator=SimulatorSettings(
            min_latency_ms=0, max_latency_ms=5, min_duration_seconds=1, max_duration_seconds=3, time_scale=0.01, seed=7
        ),
        dialer=DialerSettings(**knobs),
        console=ConsoleSettings(enabled=False),  # tests that want the console turn it on (tests/console_helpers.py)
        logging=LoggingSettings(level="warning"),
    )


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.05
) -> None:
    """Poll until predicate() is true; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def daemon_env(db_url: str, simulator_url: str, port: int, **dialer: Any) -> dict[str, str]:
    """Environment for a `python -m dialer run` subprocess on loopback."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_") and k != "NOTIFY_SOCKET"}
    env.update(
        {
            "DIALER_DATABASE__URL": db_url,
            "DIALER_DATABASE__KEEPALIVE_SECONDS": "1",
            "DIALER_HTTP__PORT": str(port),
            "DIALER_HTTP__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "DIALER_CARRIER__KIND": "simulator",
            "DIALER_CONSOLE__ENABLED": "false",
            "DIALER_TWILIO__API_BASE_URL": simulator_url,
            "DIALER_TWILIO__FROM_NUMBER": FROM_NUMBER,
            "DIALER_LOGGING__FORMAT": "json",
        }
    )
    for key, value in dialer.items():
        env[f"DIALER_DIALER__{key.upper()}"] = str(value)
    return env


@contextlib.contextmanager
def server_dir(prefix: str) -> Iterator[Path]:
    """A directory an embedded PostgreSQL can live in, outside pytest's basetemp:
    pytest resets its temp root to 0700 whenever a session starts, which would lock
    the server's own user (when tests run as root) out of its data."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
