"""GroupCommit's batching rules, with a recording batch runner in place of a statement
(the statements themselves are pinned against the database in
tests/integration/test_group_commit_sql.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

from dialer.store.group_commit import GroupCommit


class Runner:
    """Doubles each item; records every batch; fails on request."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_batches_with: BaseException | None = None
        self.bad_item: int | None = None

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_batches_with is not None and len(items) > 1:
            raise self.fail_batches_with
        if self.bad_item in items:
            raise asyncpg.CheckViolationError(f"item {self.bad_item} is bad")
        return [i * 2 for i in items]


async def test_writes_of_one_loop_turn_share_one_statement() -> None:
    """Items submitted together go out as one batch, each caller getting its own result."""
    runner = Runner()
    group = GroupCommit(runner)
    results = await asyncio.gather(*(group.submit(i) for i in range(5)))
    assert results == [0, 2, 4, 6, 8]
    assert runner.batches == [[0, 1, 2, 3, 4]]
    assert (group.statements, group.items) == (1, 5)


async def test_writes_queue_behind_the_statement_in_flight() -> None:
    """While one statement runs, new items wait and then go out together, in order."""
    runner = Runner()
    group = GroupCommit(runner)
    runner.gate.clear()
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(group.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert runner.batches == [[1]]
    runner.gate.set()
    assert await first == 2
    assert [await f for f in later] == [4, 6, 8]
    assert runner.batches == [[1], [2, 3, 4]]


async def test_batches_are_capped() -> None:
    """No statement carries more than max_batch items."""
    runner = Runner()
    group = GroupCommit(runner, max_batch=2)
    assert await asyncio.gather(*(group.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert runner.batches == [[0, 1], [2, 3], [4]]


async def test_a_refused_batch_is_retried_item_by_item() -> None:
    """A server error on the batch (here: a deadlock) sends each item on its own, so
    only the item that fails alone fails."""
    runner = Runner()
    runner.fail_batches_with = asyncpg.DeadlockDetectedError("deadlock detected")
    runner.bad_item = 2
    group = GroupCommit(runner)
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, 2, 3)), return_exceptions=True)
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], asyncpg.CheckViolationError)
    assert runner.batches == [[1, 2, 3], [1], [2], [3]]


async def test_a_connection_error_fails_every_item_of_the_batch() -> None:
    """A lost connection is every item's error; nothing is retried here (the callers
    decide, as they would for a single statement)."""
    runner = Runner()
    runner.fail_batches_with = ConnectionResetError("gone")
    group = GroupCommit(runner)
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, 2)), return_exceptions=True)
    assert all(isinstance(o, ConnectionResetError) for o in outcomes)
    assert runner.batches == [[1, 2]]


async def test_a_caller_that_stopped_waiting_is_left_out() -> None:
    """An item whose caller was cancelled before its batch left is never sent."""
    runner = Runner()
    group = GroupCommit(runner)
    runner.gate.clear()
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(group.submit(2))
    kept = asyncio.ensure_future(group.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    runner.gate.set()
    assert (await first, await kept) == (2, 6)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert runner.batches == [[1], [3]]
