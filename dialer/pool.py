"""The bounded pool of call coroutines (docs/architecture.md): one coroutine per live call, from
the carrier request to the final status, holding a slot of `max_concurrent_calls`
the whole time; the shared pacer (pacing.py) spaces the requests."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar

import structlog

from dialer.carrier import FINAL_TWILIO_STATUSES, Carrier, DialRequest
from dialer.errors import CarrierError, CarrierErrorKind, DatabaseUnavailable
from dialer.menu import RESERVED_RESPONSES, MenuError, parse_menu
from dialer.metrics import Metrics
from dialer.models import ApplyResult, CallEvent, CallStatus, ClaimedCall, DialIntent
from dialer.pacing import SharedPacer
from dialer.store.live import CallEnding, LiveCall

log = structlog.get_logger(__name__)

# Campaign statuses in which nothing is dialed (docs/campaigns.md#lifecycle).
_NOT_DIALING = frozenset({"paused", "cancelled", "completed"})
# A halt is remembered this long (seconds): far longer than any gate-to-send wait.
_HALT_MEMORY = 60.0

RECONCILE_GRACE = 3.0  # seconds to let an unknown-outcome call show up at the carrier
RECONCILE_ROUNDS = 3
FOLLOW_MARGIN = 60.0  # seconds past ring timeout + time limit before a call is overdue
DB_RETRY_DELAY = 1.0  # seconds between retries of a failed database write

# What a refused or failed request means for the attempt; the rules behind each intent
# live in SQL (sql/0009_attempt_end.sql). An unknown outcome is reconciled first.
INTENT_OF_KIND = {
    CarrierErrorKind.TRANSIENT: DialIntent.REQUEUE,
    CarrierErrorKind.PERMANENT: DialIntent.FAIL_PERMANENT,
    CarrierErrorKind.REJECTED: DialIntent.FAIL_RETRYABLE,
}

P = ParamSpec("P")
T = TypeVar("T")

# Builds the request for a claimed call (TwiML rendering, callback URLs).
RequestBuilder = Callable[[ClaimedCall], DialRequest]


class PoolStore(Protocol):
    """What the call pool needs from the database (`dialer.store.lifecycle.LifecycleStore`).

    Every coroutine is one short transaction behind the error boundary: a lost
    database raises `DatabaseUnavailable`, which the pool retries or treats as a
    closed gate. How an attempt ends is decided in SQL (sql/0009_attempt_end.sql),
    never here."""

    @property
    def clock(self) -> Callable[[], datetime]:
        """The store's clock (naive UTC)."""
        ...

    async def begin_dial(self, call_id: uuid.UUID, again: bool = False) -> bool:
        """The dial gate: True (and dialed_at set) when the request may leave now."""
        ...

    async def release_claim(self, call_id: uuid.UUID) -> None:
        """Hand a claimed call that was never dialed back to the schedule."""
        ...

    async def dial_accepted(self, call_id: uuid.UUID, call_sid: str) -> bool:
        """The carrier accepted the request: store its sid (adopt the call)."""
        ...

    async def dial_failed(
        self,
        call_id: uuid.UUID,
        intent: DialIntent,
        *,
        code: int | None = None,
        status: int | None = None,
        message: str = "",
    ) -> CallStatus:
        """The request failed; `intent` says what that means. Returns the new status."""
        ...

    async def adopted_sids(self, sids: Sequence[str]) -> set[str]:
        """Which of these carrier sids a call already holds."""
        ...

    async def apply_call_event(self, call_id: uuid.UUID | None, event: CallEvent) -> ApplyResult:
        """Apply one carrier status event to its call."""
        ...

    async def call_statuses(self, call_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CallStatus]:
        """The current status of each call."""
        ...

    async def call_endings(self, call_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CallEnding]:
        """The status, outcome and response of each call."""
        ...

    async def live_call(self, call_id: uuid.UUID) -> LiveCall | None:
        """The call as a live call to follow, or None when it is not live."""
        ...


def _declared(menu: Any) -> frozenset[str]:
    """The outcome labels a campaign's menu declares (none for no menu or a bad one)."""
    if menu is None:
        return frozenset()
    try:
        return parse_menu(menu).outcomes
    except MenuError:
        return frozenset()


@dataclass
class _Follow:
    """What the pool knows of one live call it holds."""

    campaign_id: uuid.UUID
    done: asyncio.Event = field(default_factory=asyncio.Event)
    heard_at: float = field(default_factory=time.monotonic)
    in_progress: bool = False  # call_sid stored: intermediate callbacks need no DB write
    # The carrier request is in flight (begin_dial committed). Callbacks can beat the
    # create response; their sid is kept so an unknown outcome needs no carrier search.
    dialing: bool = False
    heard_sid: str | None = None
    sid: str | None = None  # the call's CallSid once known, for its call_ended line
    # The campaign's declared outcome labels: the response metric's label set is
    # these and the reserved responses, nothing a row could say beyond them.
    outcomes: frozenset[str] = frozenset()


class CallPool:
    """Runs call coroutines; the scheduler asks it for free slots and hands it
    claimed calls; NOTIFY and webhooks tell it about progress."""

    def __init__(
        self,
        *,
        store: PoolStore,
        carrier: Carrier,
        pacer: SharedPacer,
        metrics: Metrics,
        build_request: RequestBuilder,
        max_concurrent_calls: int,
        reconcile_after_seconds: float,
        on_slot_freed: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.carrier = carrier
        self.pacer = pacer
        self.metrics = metrics
        self.build_request = build_request
        self.max_concurrent_calls = max_concurrent_calls
        self.reconcile_after = reconcile_after_seconds
        self.on_slot_freed = on_slot_freed
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._follows: dict[uuid.UUID, _Follow] = {}
        self._per_campaign: Counter[uuid.UUID] = Counter()
        self._dialing = True
        self._notified: set[uuid.UUID] = set()  # NOTIFYed calls whose rows are to be read
        # Campaigns a NOTIFY said stopped dialing (paused, cancelled, completed), and
        # when it came (monotonic): a call whose gate began before then asks again.
        self._halted: dict[uuid.UUID, float] = {}
        self._checker: asyncio.Task[None] | None = None
        self.peak_live = 0

    # ----------------------------------------------------------- scheduler side

    def free_slots(self) -> int:
        """Slots free for new claims (0 once the pool stopped dialing)."""
        if not self._dialing:
            return 0
        return max(0, self.max_concurrent_calls - len(self._tasks))

    def on_campaign_notification(self, payload: str) -> None:
        """A campaign's status changed (`<id>:<status>`, from the database's trigger):
        remember when one stopped dialing, so calls that passed the dial gate before
        it did not slip out during their wait for a dial slot. Anything else is
        ignored; a forged payload costs one more gate round trip, nothing more."""
        campaign, _, status = payload.partition(":")
        try:
            campaign_id = uuid.UUID(campaign)
        except ValueError:
            return
        now = time.monotonic()
        for old in [c for c, at in self._halted.items() if now - at > _HALT_MEMORY]:
            del self._halted[old]
        if status == "active":
            self._halted.pop(campaign_id, None)
        elif status in _NOT_DIALING:
            self._halted[campaign_id] = now

    def live_in(self, campaign_id: uuid.UUID) -> int:
        """Calls this pool holds for one campaign."""
        return self._per_campaign[campaign_id]

    def __len__(self) -> int:
        return len(self._tasks)

    def holds(self, call_id: uuid.UUID) -> bool:
        """Whether a coroutine of this pool follows the call right now."""
        return call_id in self._tasks

    def start(self, call: ClaimedCall) -> None:
        """Run a freshly claimed call to its end."""
        self._spawn(call.id, call.campaign_id, self._dial_and_follow(call), outcomes=_declared(call.menu))

    def resume(self, call: LiveCall) -> None:
        """Follow a call this instance adopted (restart, rescue): reconcile with the
        carrier first, since its callbacks may have come while nobody listened."""
        if call.id not in self._tasks:
            self._spawn(call.id, call.campaign_id, self._resume(call), outcomes=_declared(call.menu))

    def _spawn(
        self,
        call_id: uuid.UUID,
        campaign_id: uuid.UUID,
        coro: Coroutine[Any, Any, None],
        outcomes: frozenset[str] = frozenset(),
    ) -> None:
        follow = _Follow(campaign_id=campaign_id, outcomes=outcomes)
        self._follows[call_id] = follow
        self._per_campaign[campaign_id] += 1
        task = asyncio.create_task(self._guard(call_id, coro), name=f"call-{call_id}")
        self._tasks[call_id] = task
        self.peak_live = max(self.peak_live, len(self._tasks))
        self.metrics.live_calls.set(len(self._tasks))

    async def _guard(self, call_id: uuid.UUID, coro: Coroutine[Any, Any, None]) -> None:
        structlog.contextvars.bind_contextvars(call_id=str(call_id))
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            # The call stays in the database as it is; rescue or reconciliation picks it up.
            log.exception("call_coroutine_failed")
        finally:
            follow = self._follows.pop(call_id, None)
            self._tasks.pop(call_id, None)
            if follow is not None:
                self._per_campaign[follow.campaign_id] -= 1
                if self._per_campaign[follow.campaign_id] <= 0:
                    del self._per_campaign[follow.campaign_id]
            self.metrics.live_calls.set(len(self._tasks))
            self.on_slot_freed()

    # ------------------------------------------------------------ event side

    def on_call_notification(self, payload: str) -> None:
        """NOTIFY dialer_call `id:status:outcome`: a call this pool holds may have
        ended, on whichever instance applied the callback. Any role that can connect
        can send such a payload, so it only wakes: the call is read from the database
        (one query for every call notified meanwhile) and ends only if its row says
        so. Nothing of the payload but the id is used."""
        try:
            call_id = uuid.UUID(payload.partition(":")[0])
        except ValueError:
            return
        follow = self._follows.get(call_id)
        if follow is None or follow.done.is_set():
            return
        self._notified.add(call_id)
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_notified(), name="check-notified-calls")

    async def _check_notified(self) -> None:
        """Read the rows of the calls notified so far; end those that are final."""
        while self._notified:
            ids = [i for i in self._notified if i in self._follows]
            self._notified.clear()
            if not ids:
                return
            try:
                endings = await self.store.call_endings(ids)
            except DatabaseUnavailable as exc:
                # Try again shortly; a LISTEN reconnect refreshes every call anyway, and
                # each call's own reconciliation bounds the wait.
                self.metrics.db_errors.inc()
                log.warning("call_notification_check_failed", error=str(exc))
                self._notified.update(ids)
                await asyncio.sleep(DB_RETRY_DELAY)
                continue
            for call_id, ending in endings.items():
                if ending.status.is_final:
                    self._finished(call_id, ending)

    def _finished(self, call_id: uuid.UUID, ending: CallEnding) -> None:
        """The database says the call is final: its coroutine may end."""
        follow = self._follows.get(call_id)
        if follow is None or follow.done.is_set():
            return
        follow.heard_at = time.monotonic()
        outcome = ending.outcome or ending.status.value
        # The final callback can store the sid before this call's own adoption (batched)
        # has: the row's sid then names the call in its call_ended line.
        self._ended(call_id, follow.campaign_id, follow.sid or ending.call_sid, ending.status, outcome)
        if (response := ending.response) is not None:
            known = response in RESERVED_RESPONSES or response in follow.outcomes
            self.metrics.responses.labels(
                campaign_id=str(follow.campaign_id), response=response if known else "other"
            ).inc()
        follow.done.set()

    def _ended(
        self, call_id: uuid.UUID, campaign_id: uuid.UUID, sid: str | None, status: CallStatus, outcome: str
    ) -> None:
        """One call_ended line and one outcome count per call, with its own ids bound
        (this may run in another call's task, or the notification checker's)."""
        self.metrics.outcomes.labels(campaign_id=str(campaign_id), outcome=outcome).inc()
        log.info(
            "call_ended",
            campaign_id=str(campaign_id),
            call_id=str(call_id),
            call_sid=sid,
            status=status.value,
            outcome=outcome,
        )

    def intercept(self, call_id: uuid.UUID | None, event: CallEvent) -> bool:
        """Webhook fast path: a non-final callback for a call this pool holds with
        its sid already stored changes nothing in the database worth a transaction;
        it only proves the call is alive. (started_at is derived from the final
        callback's duration.) Returns True when absorbed."""
        if call_id is None or event.answered_by:
            return False
        follow = self._follows.get(call_id)
        if follow is None or not (follow.in_progress or follow.dialing):
            return False
        # While the request is in flight the create response (or, failing that, the
        # final callback or reconciliation) adopts the sid: writing it here as well
        # would cost a transaction per early callback for nothing.
        follow.heard_sid = follow.heard_sid or event.call_sid
        follow.heard_at = time.monotonic()
        return True

    async def refresh(self) -> None:
        """After the LISTEN connection came back: notifications sent while it was
        down are lost, so read the status of every call we hold."""
        ids = list(self._follows)
        if not ids:
            return
        for call_id, ending in (await self.store.call_endings(ids)).items():
            if ending.status.is_final:
                self._finished(call_id, ending)

    # -------------------------------------------------------------- shutdown

    def stop_dialing(self) -> None:
        """No new carrier requests from now on; claimed calls waiting for a slot
        hand their claim back."""
        self._dialing = False

    async def drain(self, seconds: float) -> int:
        """Wait up to `seconds` for live calls to finish; cancel the rest (their rows
        stay live and are reconciled by the next instance). Returns how many were
        left unfinished."""
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=seconds)
        else:
            pending = set()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        if self._checker is not None and not self._checker.done():
            self._checker.cancel()  # nothing left to end: its calls are drained or cancelled
        return len(pending)

    async def cancel_all(self) -> None:
        """Cancel every call coroutine at once and wait for them to end (a close
        without drain: their rows stay live and are adopted by the next instance)."""
        tasks = list(self._tasks.values())
        if self._checker is not None and not self._checker.done():
            tasks.append(self._checker)  # what it would end is being cancelled
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # ------------------------------------------------------------- coroutines

    async def _dial_and_follow(self, call: ClaimedCall) -> None:
        structlog.contextvars.bind_contextvars(campaign_id=str(call.campaign_id))
        # A campaign with its own rate waits for a slot of its own (docs/campaigns.md#dial-rate).
        scope = call.campaign_id if call.calls_per_second is not None else None
        slot = await self.pacer.acquire(scope)
        gated_at = time.monotonic()
        gate_open = self._dialing and await self._paced_gate(call.id)
        if gate_open and not await self.pacer.settle(slot):
            # The gate outlasted the slot (a slow or stalled database): sent now, the
            # request could bunch with the dials of the slots after it, as would every
            # call held up with it (docs/invariants.md#9). A new slot and the gate again
            # (right before the request: a pause is still obeyed at once); late again,
            # the database is slow for every call alike, and the call goes anyway
            # rather than stall the campaign.
            log.info("dial_slot_missed")
            slot = await self.pacer.acquire(scope)
            gated_at = time.monotonic()
            gate_open = self._dialing and await self._paced_gate(call.id, again=True)
            if gate_open:
                await self.pacer.settle(slot, last_try=True)
        if gate_open and self._halted.get(call.campaign_id, -1.0) >= gated_at:
            # Paused or cancelled (a NOTIFY) since this call's gate began, which may
            # have read the campaign still active; the call then waited for its slot.
            # The gate again, right before the request (docs/invariants.md#3): a pause
            # stops the calls already let through, not only those behind them.
            log.info("dial_gate_asked_again_after_halt")
            gate_open = self._dialing and await self._gate_open(call.id, again=True)
        if not gate_open:
            # Paused, cancelled, outside hours, or shutting down since the claim.
            await self._db(self.store.release_claim, call.id)
            log.info("claim_released")
            return
        request = self.build_request(call)
        self.metrics.dials.labels(campaign_id=str(call.campaign_id)).inc()
        follow = self._follows[call.id]
        follow.dialing = True
        sid: str | None
        try:
            placed = await self.carrier.dial(request)
        except CarrierError as exc:
            self.metrics.carrier_errors.labels(kind=exc.kind).inc()
            # A wrong number is the contact's problem, not the daemon's: info, not warning.
            level = log.info if exc.kind is CarrierErrorKind.PERMANENT else log.warning
            level("dial_failed", kind=exc.kind, status=exc.status, code=exc.code, error=str(exc))
            heard = follow.heard_sid
            if exc.kind is CarrierErrorKind.UNKNOWN and heard is not None:
                # A callback already named the call the request placed: adopt it.
                sid = heard
                await self._db(self.store.dial_accepted, call.id, sid)
                log.info("unknown_outcome_adopted_by_callback", call_sid=sid)
            elif exc.kind is CarrierErrorKind.UNKNOWN:
                sid = await self._reconcile_unknown(call.id, request)
            else:
                new_status = await self._db(
                    self.store.dial_failed,
                    call.id,
                    INTENT_OF_KIND[exc.kind],
                    code=exc.code,
                    status=exc.status,
                    message=str(exc),
                )
                if new_status is CallStatus.FAILED:
                    self._ended(call.id, call.campaign_id, None, new_status, "error")
                return
        else:
            sid = placed.sid
            await self._db(self.store.dial_accepted, call.id, sid)
        if sid is None:
            return
        follow.sid = sid
        structlog.contextvars.bind_contextvars(call_sid=sid)
        log.info("call_placed")
        await self._follow(call.id, sid, call.ring_timeout_seconds + call.time_limit_seconds)

    async def _resume(self, call: LiveCall) -> None:
        structlog.contextvars.bind_contextvars(campaign_id=str(call.campaign_id), call_sid=call.call_sid)
        sid = call.call_sid
        if sid is None:
            request = DialRequest(to=call.phone_number, from_=call.from_number, status_callback_url="")
            sid = await self._reconcile_unknown(call.id, request)
            if sid is None:
                return
        if (follow := self._follows.get(call.id)) is not None:
            follow.sid = sid
        await self._fetch_and_apply(call.id, sid)
        await self._follow(call.id, sid, call.ring_timeout_seconds + call.time_limit_seconds)

    async def _paced_gate(self, call_id: uuid.UUID, again: bool = False) -> bool:
        """The dial gate, its round trip told to the pacer (which lets calls through
        that much before their slot)."""
        began = time.monotonic()
        try:
            return await self._gate_open(call_id, again)
        finally:
            self.pacer.gate_took(time.monotonic() - began)

    async def _gate_open(self, call_id: uuid.UUID, again: bool = False) -> bool:
        """begin_dial, where a database error closes the gate: no request has left, so
        handing the claim back is always safe (even if the write did commit)."""
        try:
            return await self.store.begin_dial(call_id, again=again)
        except DatabaseUnavailable as exc:
            self.metrics.db_errors.inc()
            log.warning("dial_gate_failed", error=str(exc))
            return False

    async def _follow(self, call_id: uuid.UUID, sid: str, expected_seconds: float) -> None:
        """Wait for the final status; ask the carrier when nothing has been heard
        for reconcile_after seconds."""
        follow = self._follows[call_id]
        follow.in_progress = True
        follow.heard_at = time.monotonic()
        started = time.monotonic()
        while not follow.done.is_set():
            quiet_for = time.monotonic() - follow.heard_at
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, self.reconcile_after - quiet_for)):
                    await follow.done.wait()
            if follow.done.is_set():
                break
            if time.monotonic() - follow.heard_at >= self.reconcile_after:
                log.info("call_reconcile", silent_seconds=round(time.monotonic() - follow.heard_at, 1))
                await self._fetch_and_apply(call_id, sid)
                follow.heard_at = time.monotonic()
                if time.monotonic() - started > expected_seconds + FOLLOW_MARGIN and not follow.done.is_set():
                    log.warning("call_overdue", seconds=round(time.monotonic() - started))

    async def _fetch_and_apply(self, call_id: uuid.UUID, sid: str) -> None:
        try:
            record = await self.carrier.fetch(sid)
        except CarrierError as exc:
            self.metrics.carrier_errors.labels(kind=exc.kind).inc()
            log.warning("call_fetch_failed", error=str(exc))
            return
        await self._db(self.store.apply_call_event, call_id, record.as_event())
        if record.status in FINAL_TWILIO_STATUSES:
            ending = (await self._db(self.store.call_endings, [call_id])).get(call_id)
            if ending is not None and ending.status.is_final:
                self._finished(call_id, ending._replace(outcome=record.status))

    async def _reconcile_unknown(self, call_id: uuid.UUID, request: DialRequest) -> str | None:
        """The request may or may not have placed a call. Ask the carrier (and watch
        for a callback adopting it) before anything else, so a contact is never
        dialed twice for one attempt. Returns the sid to follow, or None when the
        call was handed back."""
        lookback = self.store.clock() - timedelta(minutes=5)
        for _ in range(RECONCILE_ROUNDS):
            await asyncio.sleep(RECONCILE_GRACE)
            statuses = await self._db(self.store.call_statuses, [call_id])
            if statuses.get(call_id) is not CallStatus.PENDING:
                live = await self._db(self.store.live_call, call_id)
                if live is not None and live.call_sid:
                    log.info("unknown_outcome_adopted_by_callback", call_sid=live.call_sid)
                    return live.call_sid
                return None
            try:
                found = await self.carrier.find(request.to, lookback)
            except CarrierError as exc:
                log.warning("reconcile_find_failed", error=str(exc))
                continue
            taken = await self._db(self.store.adopted_sids, [c.sid for c in found])
            mine = [
                c for c in found if c.sid not in taken and (not request.from_ or c.from_ == request.from_)
            ]
            if mine:
                sid = min(mine, key=lambda c: c.date_created or self.store.clock()).sid
                await self._db(self.store.dial_accepted, call_id, sid)
                log.info("unknown_outcome_adopted", call_sid=sid)
                return sid
        # Nothing at the carrier after three looks: the request never placed a call.
        await self._db(
            self.store.dial_failed,
            call_id,
            DialIntent.REQUEUE,
            message="no call found at the carrier after an unknown outcome",
        )
        log.info("unknown_outcome_requeued")
        return None

    async def _db(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """A database write that must not be lost: retried until it succeeds (the
        pool or the server may be restarting)."""
        while True:
            try:
                return await fn(*args, **kwargs)
            except DatabaseUnavailable as exc:
                self.metrics.db_errors.inc()
                log.warning("db_write_retry", error=str(exc))
                await asyncio.sleep(DB_RETRY_DELAY)
