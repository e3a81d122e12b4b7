"""The dial-rate limit: a token bucket (SPEC §5). Twilio queues calls above the
account's CPS for up to a day, so overshooting would send calls out after their
calling hours; the bucket never allows a burst beyond its size."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity`. Waiters are served in
    arrival order."""

    def __init__(self, rate: float, capacity: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self, cap: float | None = None) -> None:
        now = self._clock()
        limit = self.capacity if cap is None else cap
        self._tokens = min(limit, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait for one token and take it."""
        async with self._lock:
            self._refill()
            while self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                # A waiter wakes late by the loop's timer slack (about a millisecond
                # under load). Capping at `capacity` would throw that time away on
                # every token: with a bucket of 1 at 100/s the rate fell to 88/s
                # (bench/pacing.py). Keeping at most that one late token's credit
                # holds dials to the rate's grid without letting the bucket grow.
                self._refill(cap=self.capacity + 1)
            self._tokens -= 1
            self._tokens = min(self._tokens, float(self.capacity))

    def available_within(self, seconds: float) -> int:
        """How many tokens can be taken within `seconds` from now (the scheduler
        claims no more than this, so claimed calls do not wait long for their turn)."""
        self._refill()
        return max(1, math.floor(self._tokens + seconds * self.rate))
