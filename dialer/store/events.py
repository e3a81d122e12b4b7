"""What the carrier said about a call: the create response (adoption), a failed
request, status callbacks and fetches, recordings (docs/architecture.md, steps 4 to
6). How an attempt ends is decided in SQL, in one place (sql/0009_attempt_end.sql);
these methods hand it the facts and the engine's intent in one statement each."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Final

import structlog

from dialer.carrier import FINAL_TWILIO_STATUSES, PERMANENT_ERROR_CODES
from dialer.database import translate_errors
from dialer.models import ApplyResult, CallEvent, CallStatus, DialIntent
from dialer.store.base import StoreBase

log = structlog.get_logger(__name__)


class CallEventStore(StoreBase):
    """Carrier facts applied to calls, contacts and retries."""

    # The adoption, in its one place: pending → in_progress with the sid, the attempt counted.
    ADOPT_SQL: Final = "SELECT dialer_adopt_call($1, $2, $3)"

    @translate_errors
    async def dial_accepted(self, call_id: uuid.UUID, call_sid: str) -> bool:
        """The carrier accepted the request: pending → in_progress with its sid, and
        the attempt counts. False when a callback got there first (already adopted).
        One statement: what a dial costs most under load is round trips."""
        return bool(await self.pool.fetchval(self.ADOPT_SQL, call_id, call_sid, self.clock()))

    # (call, intent, outcome, error code, error message, now) → the call's new status.
    DIAL_FAILED_SQL: Final = "SELECT dialer_dial_failed($1, $2, $3, $4, $5, $6)"

    @translate_errors
    async def dial_failed(
        self,
        call_id: uuid.UUID,
        intent: DialIntent,
        *,
        code: int | None = None,
        status: int | None = None,
        message: str = "",
    ) -> CallStatus:
        """The carrier request failed; `intent` says what that means for the attempt
        (the rules: sql/0009_attempt_end.sql). `code` is the carrier's error code,
        `status` the HTTP status. Returns the call's new status."""
        result = await self.pool.fetchval(
            self.DIAL_FAILED_SQL,
            call_id,
            intent.value,
            f"error:{code}" if code else "error",
            code or status,
            message[:500],
            self.clock(),
        )
        return CallStatus(result)

    _ADOPTED_SIDS: Final = "SELECT call_sid FROM calls WHERE call_sid = ANY($1::text[])"

    @translate_errors
    async def adopted_sids(self, sids: Sequence[str]) -> set[str]:
        """Which of these carrier sids already belong to a call row."""
        rows = await self.pool.fetch(self._ADOPTED_SIDS, list(sids))
        return {r["call_sid"] for r in rows}

    # One carrier event, applied server-side (sql/0007; its rules in sql/0009).
    APPLY_EVENT_SQL: Final = """
        SELECT result, call_id, expected_sid
        FROM dialer_apply_call_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    """

    @translate_errors
    async def apply_call_event(self, call_id: uuid.UUID | None, event: CallEvent) -> ApplyResult:
        """Apply one carrier event (callback or fetch) in one transaction: the call
        moves only forward, a final status never changes, and a failed attempt
        schedules its retry or finalises the contact. Counters follow by trigger,
        and the status change NOTIFYs the coroutine waiting on any instance.

        The work is the SQL function dialer_apply_call_event: one autocommit round
        trip instead of BEGIN, SELECT … FOR UPDATE, two or three writes and COMMIT,
        which under load cost more in socket writes than the writes themselves, and
        held the call row locked across all of them. Which statuses are final and
        which error codes condemn the number is the carrier module's word."""
        row = await self.pool.fetchrow(
            self.APPLY_EVENT_SQL,
            call_id,
            event.call_sid,
            event.status,
            event.status in FINAL_TWILIO_STATUSES,
            event.error_code in PERMANENT_ERROR_CODES,
            event.duration,
            event.answered_by,
            event.error_code,
            event.error_message,
            event.timestamp,
            event.start_time,
            event.end_time,
            self.clock(),
        )
        assert row is not None  # a function with OUT parameters returns one row
        if row["result"] == "sid_mismatch":
            log.error(
                "callback_sid_mismatch",
                call_id=str(row["call_id"]),
                call_sid=event.call_sid,
                expected_sid=row["expected_sid"],
            )
            return ApplyResult.IGNORED
        return ApplyResult(row["result"])

    _RECORDING: Final = (
        "UPDATE calls SET recording_url = $3 WHERE (id = $1 OR call_sid = $2) AND call_sid = $2"
    )

    @translate_errors
    async def record_recording(
        self, call_id: uuid.UUID | None, call_sid: str, recording_url: str
    ) -> ApplyResult:
        """Store the recording URL of a call (at any status: it may come after the end)."""
        result = await self.pool.execute(self._RECORDING, call_id, call_sid, recording_url[:255])
        return ApplyResult.APPLIED if result != "UPDATE 0" else ApplyResult.UNKNOWN
