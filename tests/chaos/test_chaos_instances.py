"""Several instances on one database (docs/architecture.md#several-instances): two `dialer run` processes dial one
campaign; claims never overlap, any instance applies any callback, the work is
shared, and when one of them is SIGKILLed the other takes over its live calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer import database
from dialer.carrier.simulator import RunningSimulator
from tests.chaos.procs import DaemonProcess, bulk_contacts, daemons, wait_completed
from tests.factories import make_campaign
from tests.invariants import assert_campaign_invariants

pytestmark = pytest.mark.slow

CONTACTS = 600


async def test_two_processes_share_one_campaign_and_survive_each_other(
    db_url: str, chaos_sim: RunningSimulator, log_dir: Path
) -> None:
    """Two daemon processes share the dialing (each placed a fair part of the calls),
    one is SIGKILLed mid-campaign and its calls are rescued by the other, and the
    campaign ends with every invariant intact."""
    sim = chaos_sim.simulator
    sim.drop, sim.duplicate_final, sim.reorder = 0.05, 0.1, 0.1
    conn = await database.connect(db_url)
    try:
        cid = await make_campaign(conn, status="draft", max_retries=1, retry_delay_minutes=0)
        await bulk_contacts(conn, cid, CONTACTS)
    finally:
        await conn.close()
    a = DaemonProcess(db_url, chaos_sim.url, log_dir, calls_per_second=60, max_concurrent_calls=30)
    b = DaemonProcess(db_url, chaos_sim.url, log_dir, calls_per_second=60, max_concurrent_calls=30)
    with daemons(a, b):
        await a.start()
        await b.start()
        conn = await database.connect(db_url)
        try:
            await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
            await sim.wait_for_calls(CONTACTS // 2, within=60)
            before_kill = await conn.fetch(
                "SELECT count(*) AS n FROM calls WHERE dialed_at IS NOT NULL GROUP BY claimed_by"
            )
            b.sigkill()  # a (alive, same host) sees b's pid gone and rescues its calls
            orphaned = await conn.fetchval("SELECT count(*) FROM calls WHERE status IN ('pending', 'in_progress')")
        finally:
            await conn.close()
        await wait_completed(db_url, cid, 90)
        a.stop()
    conn = await database.connect(db_url)
    try:
        per_instance = await conn.fetch(
            "SELECT claimed_by, count(*) AS n FROM calls WHERE call_sid IS NOT NULL GROUP BY claimed_by"
        )
        shares = sorted(int(r["n"]) for r in per_instance)
        split = sorted(int(r["n"]) for r in before_kill)
        print(f"\ntwo instances: carrier calls {len(sim.calls)}, dials per instance before the kill {split}, "
              f"rows per final owner {shares}, live when b was killed {orphaned}")
        assert len(split) == 2
        assert split[0] >= sum(split) // 4, "both instances placed a fair share of the calls"
        await assert_campaign_invariants(conn, cid, sim.calls, max_retries=1)
    finally:
        await conn.close()
