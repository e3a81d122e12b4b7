"""A NOTIFY on the daemon's channels can come from any role that can connect: it may
wake the daemon, but never change a row or a decision (the daemon re-reads the
database). Tried with forged payloads while a call is live."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from tests.conftest import StartDaemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import wait_for
from tests.invariants import assert_dialed_once_each

SNAPSHOT = """
SELECT (SELECT jsonb_agg(to_jsonb(k) ORDER BY k.id) FROM calls k)::text AS calls,
       (SELECT jsonb_agg(to_jsonb(c) ORDER BY c.id) FROM campaigns c)::text AS campaigns,
       (SELECT jsonb_agg(to_jsonb(cc) ORDER BY cc.id) FROM campaign_contacts cc)::text AS contacts
"""


@pytest.fixture
async def stranger(db_url: str, conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A connection of another role: it may log in (CONNECT is PUBLIC's) and owns
    nothing; NOTIFY needs no privilege at all."""
    role = f"stranger_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'stranger-pw'")
    parts = urlsplit(db_url)
    url = urlunsplit(parts._replace(netloc=f"{role}:stranger-pw@{parts.hostname}:{parts.port}"))
    other = await asyncpg.connect(url)
    yield other
    await other.close()
    await conn.execute(f"DROP ROLE {role}")


async def test_forged_call_and_campaign_notifications_change_nothing(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon, stranger: asyncpg.Connection
) -> None:
    """While a call is live, another role NOTIFYs it `completed` (and `failed` with a
    made-up outcome) and its campaign `cancelled`: no row changes, the call coroutine
    keeps following the call, no made-up outcome reaches the metrics; the call then
    ends normally and the campaign completes."""
    # Answered calls last 2-4 s: time to forge while the call is live.
    sim.simulator.settings = sim.simulator.settings.model_copy(
        update={"time_scale": 1.0, "min_duration_seconds": 2, "max_duration_seconds": 4}
    )
    number = madrid_number(1)
    sim.simulator.script(number, ["answered"])
    daemon = await start_daemon()
    cid = await make_campaign(conn, status="active", max_retries=0)
    await add_contacts(conn, cid, [number])

    async def live() -> bool:
        return int(await conn.fetchval("SELECT count(*) FROM calls WHERE status = 'in_progress'")) == 1

    await wait_for(live, 10, "the call to be in progress")
    call_id = await conn.fetchval("SELECT id FROM calls WHERE campaign_id = $1", cid)
    before = await conn.fetchrow(SNAPSHOT)
    await stranger.execute(f"NOTIFY dialer_call, '{call_id}:completed:completed'")
    await stranger.execute("SELECT pg_notify('dialer_call', $1)", f"{call_id}:failed:forged-outcome")
    await stranger.execute("SELECT pg_notify('dialer_campaign', $1)", f"{cid}:cancelled")
    await stranger.execute("SELECT pg_notify('dialer_contacts', $1)", str(cid))
    await asyncio.sleep(0.5)  # well past the daemon's reaction to a NOTIFY
    assert await conn.fetchrow(SNAPSHOT) == before
    assert daemon.pool.holds(call_id), "a forged notification ended the call's coroutine"
    assert b"forged-outcome" not in daemon.metrics.render()

    async def completed() -> bool:
        return str(await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid)) == "completed"

    await wait_for(completed, 15, "the campaign to complete normally")
    assert await conn.fetchval("SELECT status::text FROM calls WHERE id = $1", call_id) == "completed"
    assert_dialed_once_each(sim.simulator, [number])
    assert b"forged-outcome" not in daemon.metrics.render()
