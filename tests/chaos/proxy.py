"""A small TCP proxy on loopback the chaos tests steer: it passes bytes through,
black-holes them (keeps both sockets open but forwards nothing, like a silently
dropped network path), or cuts every connection (RST-like close)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

PASS, BLACKHOLE = "pass", "blackhole"
CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied client connection and its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class TcpProxy:
    """`await start()`, point a client at `port`, then `blackhole()`, `restore()`, `cut()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.mode = PASS
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._linked = asyncio.Event()

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def blackhole(self) -> None:
        """Stop forwarding in both directions; sockets stay open and silent."""
        self.mode = BLACKHOLE
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again (bytes held while black-holed are lost with their links: a
        black-holed path is expected to be torn down by the peer's timeout)."""
        self.mode = PASS
        self._flowing.set()

    def cut(self) -> int:
        """Abort every open connection now; new connections are still accepted.
        Returns how many links were cut."""
        links = list(self._links)
        for link in links:
            self._close(link)
        return len(links)

    @property
    def open_links(self) -> int:
        """Connections currently proxied."""
        return len(self._links)

    async def wait_linked(self, than: int, within: float) -> float:
        """Seconds until more than `than` connections were accepted and linked
        (TimeoutError after `within`)."""
        started = time.monotonic()
        async with asyncio.timeout(within):
            while self.accepted <= than or not self._links:
                self._linked.clear()
                await self._linked.wait()
        return time.monotonic() - started

    async def stop(self) -> None:
        """Close the listener and every link."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == BLACKHOLE:
            # A black-holed path: the SYN "succeeds" locally but nothing ever comes back.
            await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        link = _Link(client=writer, upstream=up_writer)
        self._links.add(link)
        self._linked.set()
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if not self._flowing.is_set():
                    # Swallow: the peer sees its bytes leave and nothing arrive.
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._close(link)

    def _close(self, link: _Link) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        for w in (link.client, link.upstream):
            with contextlib.suppress(Exception):
                transport = w.transport
                transport.abort()
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
