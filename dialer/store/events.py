"""What the carrier said about a call: the create response (adoption), a failed
request, status callbacks and fetches, key presses, recordings (docs/architecture.md, steps 4 to
6). How an attempt ends is decided in SQL, in one place (sql/0009_attempt_end.sql);
these methods hand it the facts and the engine's intent in one statement each."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import asyncpg
import structlog

from dialer.carrier import FINAL_TWILIO_STATUSES, PERMANENT_ERROR_CODES
from dialer.database import translate_errors
from dialer.models import ApplyResult, CallEvent, CallStatus, DialIntent, KeyApplied, KeyPress
from dialer.store.base import StoreBase
from dialer.store.group_commit import GroupCommit
from dialer.store.live import script_from_row

log = structlog.get_logger(__name__)

# An event to apply: the call's id (None: found by its sid), the event, the time now.
_EventItem = tuple[uuid.UUID | None, CallEvent, datetime]
# A key press to record: the call's id, the press, the time now.
_KeyItem = tuple[uuid.UUID, KeyPress, datetime]


class CallEventStore(StoreBase):
    """Carrier facts applied to calls, contacts and retries."""

    # The adoption, in its one place (dialer_adopt_call): pending → in_progress with the
    # sid, the attempt counted. For a batch ($1 ids, $2 sids, $3 each one's time; group
    # commit), one call of the function per row, in the order given.
    ADOPT_SQL: Final = """
        SELECT dialer_adopt_call(t.id, t.sid, t.at) AS adopted
        FROM unnest($1::uuid[], $2::text[], $3::timestamp[]) WITH ORDINALITY AS t(id, sid, at, n)
        ORDER BY t.n
    """

    @translate_errors
    async def dial_accepted(self, call_id: uuid.UUID, call_sid: str) -> bool:
        """The carrier accepted the request: pending → in_progress with its sid, and
        the attempt counts. False when a callback got there first (already adopted).
        Adoptions made at nearly the same moment share one statement (group commit):
        what a dial costs most under load is round trips."""
        return await self._adoptions.submit((call_id, call_sid, self.clock()))

    @functools.cached_property
    def _adoptions(self) -> GroupCommit[tuple[uuid.UUID, str, datetime], bool]:
        return GroupCommit(self._adopt_many)

    async def _adopt_many(self, items: Sequence[tuple[uuid.UUID, str, datetime]]) -> list[bool]:
        """One ADOPT_SQL for the batch, in id order so that batches lock rows alike."""
        order = sorted(range(len(items)), key=lambda i: items[i][0])
        rows = await self.pool.fetch(
            self.ADOPT_SQL,
            [items[i][0] for i in order],
            [items[i][1] for i in order],
            [items[i][2] for i in order],
        )
        adopted = [False] * len(items)
        for i, row in zip(order, rows, strict=True):
            adopted[i] = bool(row["adopted"])
        return adopted

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

    # Carrier events, applied server-side (sql/0007; its rules in sql/0009): one call of
    # dialer_apply_call_event per row of the arrays, in their order (group commit).
    APPLY_EVENT_SQL: Final = """
        SELECT e.result, e.call_id, e.expected_sid
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::boolean[], $5::boolean[], $6::integer[],
                    $7::text[], $8::integer[], $9::text[], $10::timestamp[], $11::timestamp[],
                    $12::timestamp[], $13::timestamp[])
             WITH ORDINALITY AS t(id, sid, status, final, permanent, duration, answered_by, code,
                                  message, at, start_time, end_time, now, n)
        CROSS JOIN LATERAL dialer_apply_call_event(t.id, t.sid, t.status, t.final, t.permanent,
            t.duration, t.answered_by, t.code, t.message, t.at, t.start_time, t.end_time, t.now) e
        ORDER BY t.n
    """

    @translate_errors
    async def apply_call_event(self, call_id: uuid.UUID | None, event: CallEvent) -> ApplyResult:
        """Apply one carrier event (callback or fetch): the call moves only forward, a
        final status never changes, and a failed attempt schedules its retry or
        finalises the contact. Counters follow by trigger, and the status change
        NOTIFYs the coroutine waiting on any instance.

        The work is the SQL function dialer_apply_call_event: one autocommit round
        trip instead of BEGIN, SELECT … FOR UPDATE, two or three writes and COMMIT,
        which under load cost more in socket writes than the writes themselves, and
        held the call row locked across all of them. Events arriving at nearly the
        same moment share one statement (group commit). Which statuses are final and
        which error codes condemn the number is the carrier module's word."""
        result, found_id, expected_sid = await self._events.submit((call_id, event, self.clock()))
        if result == "sid_mismatch":
            log.error(
                "callback_sid_mismatch",
                call_id=str(found_id),
                call_sid=event.call_sid,
                expected_sid=expected_sid,
            )
            return ApplyResult.IGNORED
        return ApplyResult(result)

    @functools.cached_property
    def _events(self) -> GroupCommit[_EventItem, tuple[str, uuid.UUID | None, str | None]]:
        return GroupCommit(self._apply_many)

    async def _apply_many(
        self, items: Sequence[_EventItem]
    ) -> list[tuple[str, uuid.UUID | None, str | None]]:
        """One APPLY_EVENT_SQL for the batch, in (call id, sid) order so that batches
        lock rows alike."""
        order = sorted(range(len(items)), key=lambda i: (str(items[i][0] or ""), items[i][1].call_sid))
        events = [items[i][1] for i in order]
        rows = await self.pool.fetch(
            self.APPLY_EVENT_SQL,
            [items[i][0] for i in order],
            [e.call_sid for e in events],
            [e.status for e in events],
            [e.status in FINAL_TWILIO_STATUSES for e in events],
            [e.error_code in PERMANENT_ERROR_CODES for e in events],
            [e.duration for e in events],
            [e.answered_by for e in events],
            [e.error_code for e in events],
            [e.error_message for e in events],
            [e.timestamp for e in events],
            [e.start_time for e in events],
            [e.end_time for e in events],
            [items[i][2] for i in order],
        )
        results: list[tuple[str, uuid.UUID | None, str | None]] = [("unknown", None, None)] * len(items)
        for i, row in zip(order, rows, strict=True):
            results[i] = (row["result"], row["call_id"], row["expected_sid"])
        return results

    # Keypad presses (sql/0014) and, in the same statement, what each call says next:
    # its campaign's menu and script and its contact ($6: the caller id of last
    # resort). One call of dialer_apply_key per row of the arrays ($1 call ids, $2
    # sids, $3 key counts, $4 digits, $5 times), in their order (group commit);
    # materialized so that each press is applied exactly once whatever the joins.
    APPLY_KEY_SQL: Final = """
        WITH applied AS MATERIALIZED (
            SELECT t.n, g.result, g.recorded, g.call_campaign, g.call_contact
            FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::text[], $5::timestamp[])
                 WITH ORDINALITY AS t(id, sid, keys, digit, at, n)
            CROSS JOIN LATERAL dialer_apply_key(t.id, t.sid, t.keys, t.digit, t.at) g
        )
        SELECT a.result, a.recorded,
               c.script_template, c.menu, c.menu_repeats, c.voicemail_template, c.machine_detection,
               c.language, c.voice, coalesce(c.caller_id, $6) AS from_number,
               ct.first_name, ct.last_name, ct.phone_number, ct.email, ct.custom_fields,
               coalesce(cc.fields, '{}'::jsonb) AS fields
        FROM applied a
        LEFT JOIN campaigns c ON c.id = a.call_campaign AND a.result = 'applied'
        LEFT JOIN contacts ct ON ct.id = a.call_contact AND a.result = 'applied'
        LEFT JOIN campaign_contacts cc
            ON cc.campaign_id = a.call_campaign AND cc.contact_id = a.call_contact AND a.result = 'applied'
        ORDER BY a.n
    """

    @translate_errors
    async def apply_key(self, call_id: uuid.UUID, press: KeyPress) -> KeyApplied:
        """Record one keypad press in one transaction (digits, the response the key
        means, the contact's response, the do-not-call row of an opt-out) and read
        what the call says next. A replayed, stale or late press (the call final or
        answered already, or its key count moved on) changes nothing: IGNORED.
        Presses arriving at nearly the same moment share one statement (group
        commit), each applied as it would be alone."""
        row = await self._key_presses.submit((call_id, press, self.clock()))
        if row["result"] == "sid_mismatch":
            log.error("gather_sid_mismatch", call_id=str(call_id), call_sid=press.call_sid)
            return KeyApplied(ApplyResult.IGNORED)
        result = ApplyResult(row["result"])
        if result is not ApplyResult.APPLIED:
            return KeyApplied(result)
        return KeyApplied(result, response=row["recorded"], script=script_from_row(row))

    @functools.cached_property
    def _key_presses(self) -> GroupCommit[_KeyItem, asyncpg.Record]:
        return GroupCommit(self._apply_keys)

    async def _apply_keys(self, items: Sequence[_KeyItem]) -> list[asyncpg.Record]:
        """One APPLY_KEY_SQL for the batch, in call id order so that batches lock rows
        alike (a stable sort: two presses of one call keep their order)."""
        order = sorted(range(len(items)), key=lambda i: items[i][0])
        rows = await self.pool.fetch(
            self.APPLY_KEY_SQL,
            [items[i][0] for i in order],
            [items[i][1].call_sid for i in order],
            [items[i][1].keys for i in order],
            [items[i][1].digit for i in order],
            [items[i][2] for i in order],
            self.default_from_number,
        )
        by_position = dict(zip(order, rows, strict=True))
        return [by_position[i] for i in range(len(items))]

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
