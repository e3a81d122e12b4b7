"""Checkers of the invariants of docs/invariants.md, in one place: every test module
that checks an invariant imports its checker from here, never from another test
module. Each checker reads the real database (or the carrier simulator's record of
what it was asked to do) and fails naming what broke."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from dialer.carrier.simulator import SimCall, Simulator

COUNTERS = """
SELECT c.total_calls, c.pending_calls, c.successful_calls, c.failed_calls,
       (SELECT count(*) FROM calls k WHERE k.campaign_id = c.id) AS a_total,
       (SELECT count(*) FROM calls k WHERE k.campaign_id = c.id
            AND k.status IN ('scheduled', 'pending', 'in_progress')) AS a_pending,
       (SELECT count(*) FROM calls k WHERE k.campaign_id = c.id AND k.status = 'completed') AS a_ok,
       (SELECT count(*) FROM calls k WHERE k.campaign_id = c.id AND k.status = 'failed') AS a_failed
FROM campaigns c
WHERE $1::uuid IS NULL OR c.id = $1
"""


async def assert_counters_true(conn: asyncpg.Connection, campaign_id: uuid.UUID | None = None) -> None:
    """Invariant 5: every campaign's counters (or only this campaign's) equal the
    aggregates of its calls."""
    rows = await conn.fetch(COUNTERS, campaign_id)
    assert campaign_id is None or rows, f"no campaign {campaign_id}"
    for r in rows:
        assert (r["total_calls"], r["pending_calls"], r["successful_calls"], r["failed_calls"]) == (
            r["a_total"],
            r["a_pending"],
            r["a_ok"],
            r["a_failed"],
        )


async def assert_no_overlapping_live_calls(conn: asyncpg.Connection) -> None:
    """Invariant 1: a contact's attempts never overlap in time, and a finished
    campaign has no open attempt."""
    rows = await conn.fetch(
        "SELECT contact_id, dialed_at, ended_at FROM calls WHERE dialed_at IS NOT NULL "
        "ORDER BY contact_id, dialed_at"
    )
    previous: dict[uuid.UUID, datetime] = {}
    for r in rows:
        assert r["ended_at"] is not None, "a finished campaign has no open attempt"
        if r["contact_id"] in previous:
            assert r["dialed_at"] >= previous[r["contact_id"]], "two live calls overlapped for one contact"
        previous[r["contact_id"]] = r["ended_at"]


def assert_carrier_calls_never_overlap(carrier_calls: Iterable[SimCall]) -> None:
    """Invariant 1 as the carrier saw it: no number had two calls at once."""
    by_number: dict[str, list[SimCall]] = {}
    for call in carrier_calls:
        by_number.setdefault(call.to, []).append(call)
    for number, calls in by_number.items():
        calls.sort(key=lambda c: c.created_at)
        for before, after in itertools.pairwise(calls):
            assert before.end_time is not None and before.end_time <= after.created_wall, (
                f"{number}: the carrier saw two overlapping calls"
            )


def assert_dials_at_most(carrier_calls: Iterable[SimCall], limit: int) -> None:
    """Invariant 2: no number was dialed at the carrier more than `limit`
    (max_retries + 1) times."""
    per_number: dict[str, int] = {}
    for call in carrier_calls:
        per_number[call.to] = per_number.get(call.to, 0) + 1
    assert max(per_number.values(), default=0) <= limit, max(per_number.values())


def assert_dialed_once_each(carrier: Simulator, numbers: Iterable[str]) -> None:
    """Invariant 2 where nothing is retried: each number reached the carrier exactly once."""
    for number in numbers:
        assert carrier.dials_to(number) == 1, number


def assert_never_dialed(carrier: Simulator, numbers: Iterable[str]) -> None:
    """Invariant 3: numbers held back by calling hours never reached the carrier."""
    for number in numbers:
        assert carrier.dials_to(number) == 0, number


async def assert_attempts_match_carrier(conn: asyncpg.Connection, carrier_calls: Sequence[SimCall]) -> None:
    """Every call the carrier placed is exactly one calls row (by call_sid), and no
    calls row claims a sid the carrier never issued."""
    rows = await conn.fetch("SELECT call_sid FROM calls WHERE call_sid IS NOT NULL")
    ours = sorted(r["call_sid"] for r in rows)
    theirs = sorted(c.sid for c in carrier_calls)
    missing = set(theirs) - set(ours)
    assert not missing, f"{len(missing)} carrier calls have no row: {sorted(missing)[:5]}"
    assert ours == theirs


async def assert_every_contact_final(conn: asyncpg.Connection, campaign_id: uuid.UUID) -> None:
    """Invariant 4: no contact of the campaign is left open, and no call anywhere is live."""
    open_contacts = await conn.fetchval(
        "SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1 "
        "AND call_status IN ('pending', 'scheduled', 'in_progress')",
        campaign_id,
    )
    assert open_contacts == 0
    live = await conn.fetchval("SELECT count(*) FROM calls WHERE status IN ('scheduled', 'pending', 'in_progress')")
    assert live == 0


async def assert_campaign_invariants(
    conn: asyncpg.Connection, campaign_id: uuid.UUID, sim_calls: Sequence[SimCall], max_retries: int
) -> None:
    """All the invariants after a finished campaign: completed, every contact final,
    ≤ max_retries + 1 dials per number at the carrier, every carrier call exactly one
    row, no overlapping live calls per contact (in the database and at the carrier),
    counters equal aggregates."""
    assert await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", campaign_id) == "completed"
    await assert_every_contact_final(conn, campaign_id)
    assert_dials_at_most(sim_calls, max_retries + 1)
    await assert_attempts_match_carrier(conn, sim_calls)
    await assert_no_overlapping_live_calls(conn)
    assert_carrier_calls_never_overlap(sim_calls)
    await assert_counters_true(conn)


def worst_window(times: Iterable[float], width: float = 1.0) -> int:
    """Invariant 9's measure: the most events (dial times, in seconds) inside any window
    of `width` seconds — a sliding window over every start, not disjoint seconds."""
    ordered = sorted(times)
    best = lo = 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
