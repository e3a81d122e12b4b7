"""Live pages without polling storms (docs/console.md#live-updates).

The hub is one more consumer of the notifications the daemon's LISTEN connection
already receives (`dialer/listener.py`): it opens no connection of its own, so the
database sees one listener however many tabs are open. A notification only marks
the hub dirty (O(1), whatever the call rate); a background pass then renders each
*topic* that has subscribers — the board, the instances, one campaign — once, and
hands the result to every subscriber of that topic. Passes are at least `interval`
apart (notifications arriving meanwhile fold into the next pass), so N open tabs
cost one snapshot per topic per interval, not N. A pass also runs every
`idle_refresh` seconds without notifications: heartbeat ages and per-minute rates
move on their own. And the hub spends at most `max_duty` of the time taking
snapshots: when a pass takes longer than `interval * max_duty` (a campaign of
millions of rows), the next one waits correspondingly longer, so the database's
share of work for live pages stays bounded whatever the campaign's size.

Each subscriber holds only the latest value per event: a slow browser skips
intermediate states instead of queueing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

Event = tuple[str, str]  # (SSE event name, data)
Render = Callable[[str], Awaitable[list[Event]]]  # topic → events; [] when there is nothing to show


class TooManyClients(Exception):
    """The console's cap on open live connections is reached."""


@dataclass(eq=False)
class Mailbox:
    """One subscriber's latest value per event name."""

    topic: str
    _pending: dict[str, str] = field(default_factory=dict)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def put(self, event: str, data: str) -> None:
        """Replace the pending value of `event` (a newer snapshot supersedes it)."""
        self._pending[event] = data
        self._ready.set()

    def close(self) -> None:
        """End the subscription (the hub is stopping)."""
        self.closed = True
        self._ready.set()

    async def next(self) -> list[Event] | None:
        """The events pending since the last call; None once closed."""
        await self._ready.wait()
        self._ready.clear()
        if self.closed:
            return None
        events = list(self._pending.items())
        self._pending.clear()
        return events


class LiveHub:
    """Debounced fan-out of rendered snapshots to server-sent-event subscribers."""

    def __init__(
        self,
        render: Render,
        *,
        interval: float,
        idle_refresh: float = 5.0,
        max_clients: int = 100,
        max_duty: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render = render
        self.interval = interval
        self.max_duty = max_duty
        self.idle_refresh = idle_refresh
        self.max_clients = max_clients
        self._clock = clock
        self._subscribers: dict[str, set[Mailbox]] = {}
        self._last_sent: dict[tuple[str, str], str] = {}
        self._wake = asyncio.Event()
        self._closed = False
        self._failing: set[str] = set()  # topics whose last render failed (logged once)
        self.notifications = 0
        self.renders = 0  # topic snapshots taken: what the database pays for live pages

    @property
    def clients(self) -> int:
        """Open subscriptions."""
        return sum(len(s) for s in self._subscribers.values())

    def notify(self, _payload: str = "") -> None:
        """A Listener handler: something changed. Costs nothing but a flag."""
        self.notifications += 1
        self._wake.set()

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[Mailbox]:
        """Receive the topic's updates while inside the block."""
        if self.clients >= self.max_clients:
            raise TooManyClients(f"{self.max_clients} live connections are open already")
        mailbox = Mailbox(topic)
        if self._closed:
            mailbox.close()
        self._subscribers.setdefault(topic, set()).add(mailbox)
        try:
            yield mailbox
        finally:
            subscribers = self._subscribers.get(topic)
            if subscribers is not None:
                subscribers.discard(mailbox)
                if not subscribers:
                    del self._subscribers[topic]
                    for key in [k for k in self._last_sent if k[0] == topic]:
                        del self._last_sent[key]

    def close(self) -> None:
        """Stop: every subscription ends (its stream closes) and `run` returns."""
        self._closed = True
        for subscribers in self._subscribers.values():
            for mailbox in subscribers:
                mailbox.close()
        self._wake.set()

    async def run(self) -> None:
        """The pass loop; returns after `close()`."""
        next_pass = float("-inf")
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_refresh):
                    await self._wake.wait()
            if self._closed:
                return
            wait = next_pass - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)  # notifications meanwhile fold into this pass
            self._wake.clear()
            started = self._clock()
            await self.refresh()
            took = self._clock() - started
            next_pass = started + max(self.interval, took / self.max_duty)

    async def refresh(self) -> None:
        """One pass: render every subscribed topic once and deliver what changed."""
        for topic in list(self._subscribers):
            try:
                events = await self._render(topic)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away; the next pass tries again
                if topic not in self._failing:
                    self._failing.add(topic)
                    log.warning("console_live_render_failed", topic=topic.split(":")[0], error=str(exc))
                continue
            self._failing.discard(topic)
            self.renders += 1
            for event, data in events:
                key = (topic, event)
                if self._last_sent.get(key) == data:
                    continue
                self._last_sent[key] = data
                for mailbox in self._subscribers.get(topic, ()):
                    mailbox.put(event, data)
