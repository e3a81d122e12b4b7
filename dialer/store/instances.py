"""This process among the instances sharing the database: registration, heartbeat,
a clean stop (docs/architecture.md#several-instances)."""

from __future__ import annotations

import os
import socket
from typing import Final

from dialer.database import translate_errors
from dialer.store.base import StoreBase


class InstanceStore(StoreBase):
    """dialer_instances: who is alive, so others know whose calls to rescue."""

    _REGISTER: Final = """
        INSERT INTO dialer_instances (id, hostname, pid, started_at, heartbeat_at, calls_per_second)
        VALUES ($1, $2, $3, $4, $4, $5)
    """
    _SAME_HOST: Final = (
        "SELECT id, pid FROM dialer_instances WHERE hostname = $1 AND stopped_at IS NULL AND id <> $2"
    )
    _MARK_DEAD: Final = "UPDATE dialer_instances SET stopped_at = $2 WHERE id = ANY($1::uuid[])"

    @translate_errors
    async def register_instance(self, calls_per_second: float | None = None) -> None:
        """Record this process in dialer_instances with its configured dial rate (the
        account's rate is the least of the live instances', docs/architecture.md#pacing;
        None for a store that does not dial, which then sets no rate), and mark dead any
        earlier process on this host whose pid no longer runs (so its calls are rescued
        at once)."""
        host = socket.gethostname()
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(self._REGISTER, self.instance_id, host, os.getpid(), now, calls_per_second)
            rows = await conn.fetch(self._SAME_HOST, host, self.instance_id)
            dead = [r["id"] for r in rows if not _pid_alive(r["pid"])]
            if dead:
                await conn.execute(self._MARK_DEAD, dead, now)

    @translate_errors
    async def ping(self) -> None:
        """One trivial round trip: raises DatabaseUnavailable unless the database answers."""
        await self.pool.fetchval("SELECT 1")

    _HEARTBEAT: Final = (
        "UPDATE dialer_instances SET heartbeat_at = $2, dial_rate = $3, rate_share = $4 WHERE id = $1"
    )

    @translate_errors
    async def heartbeat(self, dial_rate: float = 0.0, rate_share: float | None = None) -> None:
        """Tell other instances this one is alive; with how many dials per second it
        made since the last heartbeat and how many it may count on now (its part of
        the account's rate: the console shows both per instance)."""
        await self.pool.execute(self._HEARTBEAT, self.instance_id, self.clock(), dial_rate, rate_share)

    _STOPPED: Final = "UPDATE dialer_instances SET stopped_at = $2 WHERE id = $1"

    @translate_errors
    async def mark_stopped(self) -> None:
        """A clean exit: other instances need not wait for the heartbeat to expire."""
        await self.pool.execute(self._STOPPED, self.instance_id, self.clock())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
