"""The daemon's side loops (scheduler, LISTEN connection) kept alive: a loop that
crashes is logged, counted in `dialer_loop_restarts_total{loop}`, remembered for
`/readyz`, and started again after a short pause."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from dialer.metrics import Metrics

log = structlog.get_logger(__name__)

RESTART_DELAY = 1.0  # seconds before a crashed loop is started again


@dataclass
class Restarts:
    """What is known of one loop's crashes."""

    count: int
    last_error: str
    last_at: float  # time.monotonic()


class Supervisor:
    """Starts named loops as tasks and restarts them when they crash."""

    def __init__(self, metrics: Metrics, *, restart_delay: float = RESTART_DELAY) -> None:
        self.metrics = metrics
        self.restart_delay = restart_delay
        self.restarts: dict[str, Restarts] = {}

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `factory()` as task `name` until it returns or the task is cancelled."""
        return asyncio.create_task(self._supervise(name, factory), name=name)

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("background_task_crashed", task=name)
                self.metrics.loop_restarts.labels(loop=name).inc()
                seen = self.restarts.get(name)
                self.restarts[name] = Restarts(
                    count=(seen.count if seen else 0) + 1,
                    # The type only: a message may carry row values; the log line has it all.
                    last_error=type(exc).__name__,
                    last_at=time.monotonic(),
                )
                await asyncio.sleep(self.restart_delay)

    def detail(self) -> list[str]:
        """One line per loop that has crashed and been restarted, for /readyz."""
        now = time.monotonic()
        return [
            f"loop {name} restarted {r.count} time{'s' if r.count != 1 else ''}, "
            f"last {now - r.last_at:.0f}s ago: {r.last_error}"
            for name, r in sorted(self.restarts.items())
        ]
