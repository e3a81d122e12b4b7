"""The dial-rate limit: a token bucket (docs/architecture.md). Twilio queues calls above the
account's CPS for up to a day, so overshooting would send calls out after their
calling hours; the bucket never allows a burst beyond its size."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

WINDOW_SECONDS = 1.0  # the promise: no window this long holds more than rate + capacity grants
# Waits shorter than this count as done: clock arithmetic in floats can leave a
# remainder below the clock's resolution, which no sleep would ever use up.
MIN_WAIT_SECONDS = 1e-6


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity`. Waiters are served in
    arrival order.

    Two rules together. The bucket keeps dials on the rate's grid even when the event
    loop wakes a waiter late (see acquire); and no window of WINDOW_SECONDS ever holds
    more than floor(rate * WINDOW_SECONDS + capacity) grants, checked against the
    actual grant times, so the late-credit rule can never add up to a burst."""

    def __init__(
        self,
        rate: float,
        capacity: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(capacity)
        self._stamp = clock()
        self._lock = asyncio.Lock()
        # Grant times of the last window's worth of grants (bounded by the window limit).
        self.window_limit = max(1, math.floor(rate * WINDOW_SECONDS + capacity))
        self._grants: deque[float] = deque(maxlen=self.window_limit)

    def _refill(self, cap: float | None = None) -> None:
        now = self._clock()
        limit = self.capacity if cap is None else cap
        self._tokens = min(limit, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _window_wait(self) -> float:
        """Seconds until one more grant keeps every window within the limit."""
        if len(self._grants) < self.window_limit:
            return 0.0
        return self._grants[0] + WINDOW_SECONDS - self._clock()

    async def acquire(self) -> None:
        """Wait for one token and take it."""
        async with self._lock:
            self._refill()
            while True:
                if self._tokens >= 1 - MIN_WAIT_SECONDS * self.rate:
                    wait = self._window_wait()
                    if wait <= MIN_WAIT_SECONDS:
                        break
                else:
                    wait = (1 - self._tokens) / self.rate
                await self._sleep(wait)
                # A waiter wakes late by the loop's timer slack (about a millisecond
                # under load). Capping at `capacity` would throw that time away on
                # every token: with a bucket of 1 at 100/s the rate fell to 88/s
                # (bench/pacing.py). Keeping at most that one late token's credit
                # holds dials to the rate's grid; the window check above stops that
                # credit from letting two grants through where a window is full.
                self._refill(cap=self.capacity + 1)
            self._tokens = min(max(0.0, self._tokens - 1), float(self.capacity))
            self._grants.append(self._clock())

    def available_within(self, seconds: float) -> int:
        """How many tokens can be taken within `seconds` from now (the scheduler
        claims no more than this, so claimed calls do not wait long for their turn)."""
        self._refill()
        return max(1, math.floor(self._tokens + seconds * self.rate))
