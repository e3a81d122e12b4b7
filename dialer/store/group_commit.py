"""Group commit: the same kind of write, made by many call coroutines at nearly the
same moment, sent as ONE statement (arrays + unnest) instead of one round trip and
one transaction each (docs/benchmarks.md#group-commit).

How a batch forms: the first write after a quiet spell is sent at once (after one
turn of the event loop, which gathers whatever else that turn submitted), so an idle
daemon adds no latency. While a statement is in flight, new writes queue; when it
returns, everything queued goes out together. Under load the batch grows with the
load, one statement per round trip; at most `max_batch` items per statement.

Semantics: each item is applied exactly as the one-item statement would apply it
(the batched SQL runs the same per-row logic, in a stable order so that two batches
lock rows in the same order). A batch is one transaction; if it fails with a
server-side error (a deadlock with another instance, one item's bad data), every
item is sent again on its own, so an item's error stays its own and the others
are unaffected. A connection error fails every item of the batch, as it would have
failed each of them alone. A caller that stops waiting (cancelled, timed out) before
its item was sent takes the item out of the batch; after that, as with a single
statement, the write may or may not have been applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg

I = TypeVar("I")  # noqa: E741 - the item written
R = TypeVar("R")  # what the statement says about it

# Runs the statement for a batch; returns one result per item, in the items' order.
BatchRunner = Callable[[Sequence[I]], Awaitable[Sequence[R]]]


class GroupCommit(Generic[I, R]):
    """Gathers concurrent writes of one kind into one statement at a time."""

    def __init__(self, run: BatchRunner[I, R], *, max_batch: int = 200) -> None:
        self._run = run
        self._max_batch = max_batch
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.statements = 0  # batches sent (for tests and benchmarks)
        self.items = 0  # items sent in them

    async def submit(self, item: I) -> R:
        """Write `item` with whatever else is being written now; its own result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_all(), name="group-commit")
        return await future

    async def _send_all(self) -> None:
        try:
            await asyncio.sleep(0)  # one loop turn: gather what this turn submitted
            while self._queue:
                batch = [(i, f) for i, f in self._queue[: self._max_batch] if not f.done()]
                del self._queue[: self._max_batch]
                if batch:
                    await self._send(batch)
        except BaseException:
            for _, future in self._queue:  # cancelled (loop closing): nobody waits forever
                future.cancel()
            self._queue.clear()
            raise

    async def _send(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except asyncpg.PostgresError as exc:
            if len(batch) == 1:
                self._settle_error(batch, exc)
                return
            # The server refused the batch (a deadlock, one item's error): each on its own.
            for one in batch:
                if not one[1].done():
                    await self._send([one])
            return
        except Exception as exc:
            self._settle_error(batch, exc)
            return
        except BaseException:
            for _, future in batch:  # the sender itself is cancelled: nobody waits forever
                future.cancel()
            raise
        self.statements += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    @staticmethod
    def _settle_error(batch: list[tuple[I, asyncio.Future[R]]], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

