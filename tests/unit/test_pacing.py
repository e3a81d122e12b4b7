"""The token bucket on a simulated clock whose sleeps wake late, as an event loop
under load does: the rate holds, and no one-second window exceeds rate + capacity."""

from __future__ import annotations

import asyncio
import random

import pytest

from dialer.pacing import TokenBucket


class LateClock:
    """A clock that only moves when someone sleeps, by the time asked plus slack."""

    def __init__(self, max_slack: float, seed: int = 3) -> None:
        self.now = 1000.0
        self.max_slack = max_slack
        self.rng = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds) + self.rng.uniform(0, self.max_slack)

    def work(self, seconds: float) -> None:
        """Time spent by the caller between grants (it never sleeps, the loop is busy)."""
        self.now += seconds


def _worst_window(times: list[float], width: float = 1.0) -> int:
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def _grants(bucket: TokenBucket, clock: LateClock, n: int, work: float = 0.0) -> list[float]:
    times = []
    for _ in range(n):
        await bucket.acquire()
        times.append(clock())
        clock.work(clock.rng.uniform(0, work))
    return times


@pytest.mark.parametrize(("rate", "capacity", "slack"), [(100.0, 1, 0.004), (10.0, 1, 0.03), (100.0, 5, 0.006)])
async def test_rate_holds_and_no_window_exceeds_rate_plus_capacity(rate: float, capacity: int, slack: float) -> None:
    """Wake-ups late by up to `slack`: the observed rate stays within 2 % and the
    worst one-second window within rate + capacity."""
    clock = LateClock(slack)
    bucket = TokenBucket(rate, capacity, clock=clock, sleep=clock.sleep)
    times = await _grants(bucket, clock, int(rate * 30), work=slack / 2)
    observed = (len(times) - 1) / (times[-1] - times[0])
    assert abs(observed - rate) / rate <= 0.02, observed
    assert _worst_window(times) <= rate + capacity


async def test_a_full_window_holds_a_late_double_grant_back() -> None:
    """A waiter woken a whole token late has two tokens' credit; when the last
    second already holds rate + capacity grants the second one waits."""
    clock = LateClock(0.0)
    bucket = TokenBucket(10.0, 1, clock=clock, sleep=clock.sleep)
    times = await _grants(bucket, clock, 11)  # 11 grants in the first second: a full window
    assert _worst_window(times) == 11
    clock.work(0.25)  # the loop was busy: two tokens' credit would be there
    times += await _grants(bucket, clock, 3)
    assert _worst_window(times) <= 11
    assert bucket.window_limit == 11


async def test_concurrent_waiters_are_served_in_order() -> None:
    """Real asyncio: waiters finish in arrival order at about the rate."""
    bucket = TokenBucket(200.0, 1)
    order: list[int] = []

    async def one(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(20)))
    assert order == list(range(20))
