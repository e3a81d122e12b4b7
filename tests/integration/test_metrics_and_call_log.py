"""Metrics that mean what they say: due calls split into dialable now and held by
calling hours, outcomes counted per campaign, and one `call_ended` log line per call
with its outcome and ids (docs/operations.md#metrics)."""

from __future__ import annotations

import io
import json
import uuid
import zoneinfo
from datetime import UTC, datetime, time, timedelta

import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from dialer.logs import configure_logging
from dialer.store.claims import DueCounts
from dialer.store.lifecycle import LifecycleStore
from dialer.twiml import validate_template
from tests.conftest import StartDaemon
from tests.factories import FakeClock, add_contacts, madrid_number, make_campaign
from tests.harness import wait_for


@pytest.fixture
def log_lines() -> io.StringIO:
    """The daemon's JSON log, at info level, in memory."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    return out


def _events(out: io.StringIO, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


async def test_due_calls_split_outcomes_by_campaign_and_call_ended_lines(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon, log_lines: io.StringIO
) -> None:
    """Campaign A (one answered, one busy, one call scheduled an hour ahead, so it stays
    open) and campaign B (two contacts outside their calling hours now): the gauge says
    0 dialable and 2 held; A's outcomes are counted under its id; each of A's two calls
    logs one call_ended with its campaign, call id, sid and outcome."""
    answered, busy, later = madrid_number(1), madrid_number(2), madrid_number(3)
    sim.simulator.script(answered, ["answered"])
    sim.simulator.script(busy, ["busy"])
    a = await make_campaign(conn, max_retries=0)
    await add_contacts(conn, a, [answered, busy])
    [held_back] = await add_contacts(conn, a, [later])
    await conn.execute("UPDATE campaign_contacts SET call_status = 'scheduled' WHERE contact_id = $1", held_back)
    await conn.execute(
        "INSERT INTO calls (campaign_id, contact_id, scheduled_at) VALUES ($1, $2, $3)",
        a, held_back, datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1),
    )
    madrid_now = datetime.now(zoneinfo.ZoneInfo("Europe/Madrid"))
    b = await make_campaign(
        conn, status="active",
        calling_hours_start=(madrid_now + timedelta(hours=3)).time().replace(microsecond=0),
        calling_hours_end=(madrid_now + timedelta(hours=4)).time().replace(microsecond=0),
    )
    await add_contacts(conn, b, [madrid_number(4), madrid_number(5)])
    daemon = await start_daemon()
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", a)
    registry = daemon.metrics.registry

    def sample(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    async def counted() -> bool:
        return (
            sample("dialer_call_outcomes_total", {"campaign_id": str(a), "outcome": "completed"}) == 1
            and sample("dialer_call_outcomes_total", {"campaign_id": str(a), "outcome": "busy"}) == 1
        )

    async def gauged() -> bool:
        return (
            sample("dialer_due_calls", {"state": "held"}) == 2
            and sample("dialer_due_calls", {"state": "dialable"}) == 0
        )

    await wait_for(counted, 20, "A's two outcomes to be counted under its id")
    await wait_for(gauged, 15, "the gauge to show B's two calls held and none dialable")
    rows = await conn.fetch(
        "SELECT id, call_sid, outcome FROM calls WHERE campaign_id = $1 AND status IN ('completed', 'failed')", a
    )
    ended = _events(log_lines, "call_ended")
    assert sorted((e["call_id"], e["call_sid"], e["outcome"], e["campaign_id"]) for e in ended) == sorted(
        (str(r["id"]), r["call_sid"], r["outcome"], str(a)) for r in rows
    )
    assert len(rows) == 2


async def test_due_counts_split_by_the_contacts_calling_hours(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    """At 12:00 UTC with hours 09:00-21:00, a due call to Madrid (13:00) is dialable and
    one to New York (07:00) is held; a call not yet due is neither."""
    noon = datetime(2026, 11, 25, 12, 0)
    store = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=validate_template, clock=FakeClock(noon))
    cid = await make_campaign(conn, status="active", calling_hours_start=time(9), calling_hours_end=time(21))
    madrid, new_york, later = await add_contacts(conn, cid, [madrid_number(1), "+12125550100", madrid_number(2)])
    for contact, zone, due in ((madrid, "Europe/Madrid", noon), (new_york, "America/New_York", noon),
                               (later, "Europe/Madrid", noon + timedelta(minutes=1))):
        await conn.execute(
            "UPDATE contacts SET checked_at = $2, number_valid = true, resolved_timezone = $3 WHERE id = $1",
            contact, noon, zone,
        )
        await conn.execute(
            "INSERT INTO calls (campaign_id, contact_id, scheduled_at) VALUES ($1, $2, $3)", cid, contact, due
        )
    assert await store.due_counts([cid]) == DueCounts(dialable=1, held=1)
    assert await store.due_counts([]) == DueCounts(dialable=0, held=0)
