"""The call pool against an in-memory store and carrier (tests/engine_fakes.py): what
a NOTIFY, a webhook's fast path and a LISTEN reconnect do to the coroutines it holds.
No database: the store's answers are the fake's, set by each test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from dialer import pool as pool_module
from dialer.errors import CarrierError, CarrierErrorKind
from dialer.metrics import Metrics
from dialer.models import CallEvent, CallStatus
from dialer.pacing import SharedPacer
from dialer.pool import CallPool
from tests.engine_fakes import FakeCarrier, FakeStore, MemoryGrid, request_for
from tests.harness import wait_for

POLL = 0.005  # seconds between polls: everything here is in memory


@dataclass
class Parts:
    """A pool and the fakes it runs against."""

    store: FakeStore
    carrier: FakeCarrier
    pool: CallPool
    metrics: Metrics

    async def start(self, n: int) -> list[uuid.UUID]:
        """Claim and start n calls of a new campaign; return their ids in order."""
        campaign = self.store.add_campaign(f"c{len(self.store.campaigns)}", n)
        claimed = await self.store.claim(campaign, n)
        for call in claimed:
            self.pool.start(call)
        return [c.id for c in claimed]

    async def in_progress(self, ids: list[uuid.UUID]) -> None:
        """Wait until each call's sid is stored (its coroutine follows the call)."""

        async def placed() -> bool:
            return all(self.store.calls[i].status is CallStatus.IN_PROGRESS for i in ids)

        await wait_for(placed, 5, "the calls to be placed", interval=POLL)

    async def released(self, ids: list[uuid.UUID]) -> None:
        """Wait until no coroutine of the pool follows these calls."""

        async def gone() -> bool:
            return not any(self.pool.holds(i) for i in ids)

        await wait_for(gone, 5, "the calls' coroutines to end", interval=POLL)


def _ample_pacer() -> SharedPacer:
    """1000 dials/s from an in-memory grid, and a second of allowed lateness: a gate the
    test holds for a moment does not cost the call its slot."""
    return SharedPacer(MemoryGrid(time.monotonic, 1000.0), rate=1000.0, bucket_size=1000, instance_timeout_seconds=30)


@pytest.fixture
async def parts() -> AsyncIterator[Parts]:
    """A pool of 10 slots with an ample pacer, calls followed without reconciling."""
    store, carrier, metrics = FakeStore(), FakeCarrier(), Metrics()
    pool = CallPool(
        store=store,
        carrier=carrier,
        pacer=_ample_pacer(),
        metrics=metrics,
        build_request=request_for,
        max_concurrent_calls=10,
        reconcile_after_seconds=60.0,
    )
    yield Parts(store, carrier, pool, metrics)
    await pool.cancel_all()


def _ringing(sid: str = "CA" + "1" * 32, answered_by: str | None = None) -> CallEvent:
    return CallEvent(call_sid=sid, status="ringing", answered_by=answered_by)


# -- a pause while calls wait for their slot ---------------------------------------------


async def test_a_pause_notified_after_the_gate_began_asks_the_gate_again_before_sending(parts: Parts) -> None:
    """A call's gate reads its campaign still active; the pause's NOTIFY arrives before
    the request leaves: the gate is asked again (again=True), finds the campaign
    paused, and the claim goes back — no request. A NOTIFY for another campaign, a
    resume and a forged payload hold nothing back."""
    parts.store.gate = asyncio.Event()
    (call_id,) = await parts.start(1)

    async def at_gate() -> bool:
        return parts.store.at_gate == 1

    await wait_for(at_gate, 5, "the call to reach the gate", interval=POLL)
    campaign_id = parts.store.calls[call_id].claimed.campaign_id
    parts.pool.on_campaign_notification("not-a-uuid:paused")
    parts.pool.on_campaign_notification(f"{uuid.uuid4()}:paused")
    parts.pool.on_campaign_notification(f"{campaign_id}:paused")
    parts.store.shut.add(campaign_id)
    parts.store.gate.set()
    await parts.released([call_id])
    assert parts.carrier.dials == []
    assert parts.store.gates == [(call_id, False), (call_id, True)]
    assert parts.store.released == [call_id]

    # Resumed: the next call is gated once and dialed.
    parts.store.shut.clear()
    parts.pool.on_campaign_notification(f"{campaign_id}:active")
    parts.store.gate = None
    claimed = await parts.store.claim(parts.store.campaigns[0], 1)
    parts.pool.start(claimed[0])
    await parts.in_progress([call_id])
    assert len(parts.carrier.dials) == 1
    assert parts.store.gates[2:] == [(call_id, False)]


# -- slots ----------------------------------------------------------------------------


async def test_free_slots_count_the_calls_held_and_none_once_dialing_stops(parts: Parts) -> None:
    """Free slots are max_concurrent_calls minus the calls held, and 0 after stop_dialing."""
    assert parts.pool.free_slots() == 10
    await parts.in_progress(await parts.start(4))
    assert parts.pool.free_slots() == 6
    parts.pool.stop_dialing()
    assert parts.pool.free_slots() == 0


# -- NOTIFY ---------------------------------------------------------------------------


async def test_a_final_notify_wakes_exactly_that_calls_coroutine(parts: Parts) -> None:
    """A NOTIFY for a call whose row is final ends that call's coroutine and no other."""
    ids = await parts.start(3)
    await parts.in_progress(ids)
    parts.store.finish(ids[1])
    parts.pool.on_call_notification(f"{ids[1]}:completed:completed")
    await parts.released([ids[1]])
    assert parts.pool.holds(ids[0]) and parts.pool.holds(ids[2])
    assert parts.store.endings_reads == [[ids[1]]]
    campaign_id = str(parts.store.claims[-1].campaign_id)  # the one campaign start() made
    outcome = {"campaign_id": campaign_id, "outcome": "completed"}
    assert parts.metrics.registry.get_sample_value("dialer_call_outcomes_total", outcome) == 1


async def test_a_notify_whose_row_is_not_final_ends_nothing(parts: Parts) -> None:
    """The payload only wakes: a 'completed' NOTIFY for a call whose row is live is read
    back and the call goes on."""
    ids = await parts.start(2)
    await parts.in_progress(ids)
    parts.pool.on_call_notification(f"{ids[0]}:completed:completed")

    async def read() -> bool:
        return parts.store.endings_reads == [[ids[0]]]

    await wait_for(read, 5, "the notified call's row to be read", interval=POLL)
    assert parts.pool.holds(ids[0]) and parts.pool.holds(ids[1])


@pytest.mark.parametrize("payload", ["", "garbage", "not-a-uuid:completed:completed", "0b9c1c86-5f4e-4d55-a0c2-6a1f3f2e9d10:completed"])
async def test_a_notify_for_no_call_held_reads_nothing(parts: Parts, payload: str) -> None:
    """A malformed payload, or one naming a call this pool does not hold, starts no
    database read at all."""
    await parts.in_progress(await parts.start(1))
    tasks = asyncio.all_tasks()
    parts.pool.on_call_notification(payload)
    assert asyncio.all_tasks() == tasks
    assert parts.store.endings_reads == []


async def test_notifies_arriving_together_are_read_in_one_query(parts: Parts) -> None:
    """NOTIFYs that arrive before the check runs are answered by one read of all their rows."""
    ids = await parts.start(3)
    await parts.in_progress(ids)
    for call_id in ids:
        parts.store.finish(call_id)
        parts.pool.on_call_notification(f"{call_id}:completed:completed")
    await parts.released(ids)
    [read] = parts.store.endings_reads
    assert sorted(read) == sorted(ids)


async def test_a_failed_read_of_notified_rows_is_retried(parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database failing the read of a notified call counts a db error and is
    retried: the call still ends."""
    monkeypatch.setattr(pool_module, "DB_RETRY_DELAY", 0.01)
    [call_id] = await parts.start(1)
    await parts.in_progress([call_id])
    parts.store.finish(call_id)
    parts.store.endings_failures = 1
    parts.pool.on_call_notification(f"{call_id}:completed:completed")
    await parts.released([call_id])
    assert parts.store.endings_reads == [[call_id], [call_id]]
    assert parts.metrics.registry.get_sample_value("dialer_db_errors_total") == 1


# -- the webhooks' fast path ----------------------------------------------------------


async def test_intercept_absorbs_a_non_final_event_of_a_call_with_its_sid_stored(parts: Parts) -> None:
    """A ringing callback for a held call whose sid is stored is absorbed (no store write)."""
    [call_id] = await parts.start(1)
    await parts.in_progress([call_id])
    assert parts.pool.intercept(call_id, _ringing()) is True
    assert parts.store.events == []


async def test_intercept_absorbs_while_the_request_is_in_flight_and_its_sid_adopts_an_unknown_outcome(
    parts: Parts,
) -> None:
    """A callback that beats the create response is absorbed; when the request then
    ends with an unknown outcome, the call is adopted by that callback's sid at once,
    with no search at the carrier."""
    parts.carrier.release = asyncio.Event()
    parts.carrier.error = CarrierError("timed out", kind=CarrierErrorKind.UNKNOWN)
    [call_id] = await parts.start(1)

    async def in_flight() -> bool:
        return len(parts.carrier.dials) == 1

    await wait_for(in_flight, 5, "the carrier request to leave", interval=POLL)
    early = "CA" + "e" * 32
    assert parts.pool.intercept(call_id, _ringing(early)) is True
    parts.carrier.release.set()
    await parts.in_progress([call_id])
    assert parts.store.accepted == [(call_id, early)]
    assert parts.store.events == []
    assert len(parts.carrier.dials) == 1


async def test_intercept_declines_a_call_standing_before_the_gate(parts: Parts) -> None:
    """A claimed call whose request has not left yet (waiting at the dial gate) is not
    absorbed: nothing yet proves its callbacks belong to it."""
    parts.store.gate = asyncio.Event()
    [call_id] = await parts.start(1)

    async def at_gate() -> bool:
        return parts.store.at_gate == 1

    await wait_for(at_gate, 5, "the call to reach the dial gate", interval=POLL)
    assert parts.pool.holds(call_id)
    assert parts.pool.intercept(call_id, _ringing()) is False
    parts.store.gate.set()
    await parts.in_progress([call_id])


async def test_intercept_declines_calls_it_does_not_hold_and_answering_results(parts: Parts) -> None:
    """No call_id, a call this pool does not hold, and an answered-by result (which must
    be stored) all go to the store."""
    [call_id] = await parts.start(1)
    await parts.in_progress([call_id])
    assert parts.pool.intercept(None, _ringing()) is False
    assert parts.pool.intercept(uuid.uuid4(), _ringing()) is False
    assert parts.pool.intercept(call_id, _ringing(answered_by="machine_start")) is False


# -- LISTEN reconnect -----------------------------------------------------------------


async def test_refresh_finishes_the_calls_that_became_final_while_listen_was_down(parts: Parts) -> None:
    """After a reconnect, refresh() reads every held call and ends those whose rows
    became final meanwhile (their NOTIFYs were lost); the others go on."""
    ids = await parts.start(3)
    await parts.in_progress(ids)
    parts.store.finish(ids[0])
    parts.store.finish(ids[2], CallStatus.FAILED)
    await parts.pool.refresh()
    await parts.released([ids[0], ids[2]])
    assert parts.pool.holds(ids[1])
    [read] = parts.store.endings_reads
    assert sorted(read) == sorted(ids)


async def test_refresh_with_no_call_held_reads_nothing(parts: Parts) -> None:
    """An idle pool's refresh makes no database read."""
    await parts.pool.refresh()
    assert parts.store.endings_reads == []
