"""Live calls: what the pool needs to follow them, rescue of calls held by dead
instances, reconciliation reads, shutdown, and the TwiML lookup
(docs/architecture.md#several-instances, #shutdown)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

import asyncpg
import structlog

from dialer.database import translate_errors
from dialer.models import CallScript, CallStatus
from dialer.store.base import StoreBase, contact_from_row
from dialer.store.claims import hand_back

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LiveCall:
    """A call in `pending` or `in_progress` this instance must follow to its end."""

    id: uuid.UUID
    campaign_id: uuid.UUID
    status: CallStatus
    call_sid: str | None
    dialed_at: datetime | None
    phone_number: str
    from_number: str
    ring_timeout_seconds: int
    time_limit_seconds: int
    menu: Any = None  # the campaign's menu, for the labels its responses may carry


class CallEnding(NamedTuple):
    """How a call stands: its status, the carrier's outcome, the callee's response."""

    status: CallStatus
    outcome: str | None
    response: str | None
    call_sid: str | None = None  # stored by adoption or by the final callback, whichever came first


# What following a live call needs; $2 is the caller id of last resort.
_LIVE_SELECT: Final = """
    SELECT k.id, k.campaign_id, k.status, k.call_sid, k.dialed_at, ct.phone_number,
           coalesce(c.caller_id, $2) AS from_number, c.ring_timeout_seconds, c.time_limit_seconds,
           c.menu
    FROM calls k JOIN contacts ct ON ct.id = k.contact_id JOIN campaigns c ON c.id = k.campaign_id
"""


class LiveCallStore(StoreBase):
    """Calls in flight: who holds them and what the carrier must be asked."""

    _STATUSES: Final = "SELECT id, status FROM calls WHERE id = ANY($1::uuid[])"

    @translate_errors
    async def call_statuses(self, call_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CallStatus]:
        """Current status of these calls (after a LISTEN reconnect, nothing is missed)."""
        rows = await self.pool.fetch(self._STATUSES, list(call_ids))
        return {r["id"]: CallStatus(r["status"]) for r in rows}

    _ENDINGS: Final = "SELECT id, status, outcome, response, call_sid FROM calls WHERE id = ANY($1::uuid[])"

    @translate_errors
    async def call_endings(self, call_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CallEnding]:
        """Status, outcome and response of these calls, as the rows hold them (what a
        NOTIFY payload only claims)."""
        rows = await self.pool.fetch(self._ENDINGS, list(call_ids))
        return {
            r["id"]: CallEnding(CallStatus(r["status"]), r["outcome"], r["response"], r["call_sid"])
            for r in rows
        }

    _LIVE_BY_ID: Final = _LIVE_SELECT + "WHERE k.id = $1"

    @translate_errors
    async def live_call(self, call_id: uuid.UUID) -> LiveCall | None:
        """One live call with what following it needs."""
        rows = await self._live_calls(self._LIVE_BY_ID, call_id)
        return rows[0] if rows else None

    # Live calls of instances not alive ($2: the heartbeat deadline) become this one's ($1).
    _ADOPT_ORPHANS: Final = """
        UPDATE calls k SET claimed_by = $1
        WHERE k.status IN ('pending', 'in_progress') AND k.claimed_by IS DISTINCT FROM $1
          AND NOT EXISTS (SELECT 1 FROM dialer_instances i WHERE i.id = k.claimed_by
                          AND i.stopped_at IS NULL AND i.heartbeat_at >= $2)
        RETURNING k.id, k.status, k.dialed_at
    """
    _LIVE_BY_IDS: Final = _LIVE_SELECT + "WHERE k.id = ANY($1::uuid[])"

    @translate_errors
    async def adopt_orphans(self, instance_timeout_seconds: float) -> list[LiveCall]:
        """Rescue: live calls held by instances that are dead (stopped, or silent for
        longer than the timeout) become this instance's. Those never sent
        (dialed_at NULL) go straight back to scheduled; the rest are returned for
        reconciliation with the carrier."""
        stale = self.clock() - timedelta(seconds=instance_timeout_seconds)
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._ADOPT_ORPHANS, self.instance_id, stale)
        if not rows:
            return []
        never_sent = [r["id"] for r in rows if r["status"] == CallStatus.PENDING and r["dialed_at"] is None]
        for call_id in never_sent:
            await hand_back(self.pool, call_id)
        ids = [r["id"] for r in rows if r["id"] not in never_sent]
        log.info("orphans_adopted", count=len(rows), to_reconcile=len(ids))
        return await self._live_calls(self._LIVE_BY_IDS, ids) if ids else []

    _LIVE_OF_INSTANCE: Final = (
        _LIVE_SELECT + "WHERE k.claimed_by = $1 AND k.status IN ('pending', 'in_progress')"
    )

    @translate_errors
    async def my_live_calls(self) -> list[LiveCall]:
        """Live calls this instance holds (after a restart with the same id, or for tests)."""
        return await self._live_calls(self._LIVE_OF_INSTANCE, self.instance_id)

    async def _live_calls(self, sql: str, arg: Any) -> list[LiveCall]:
        rows = await self.pool.fetch(sql, arg, self.default_from_number)
        return [
            LiveCall(
                id=r["id"],
                campaign_id=r["campaign_id"],
                status=CallStatus(r["status"]),
                call_sid=r["call_sid"],
                dialed_at=r["dialed_at"],
                phone_number=r["phone_number"],
                from_number=r["from_number"],
                ring_timeout_seconds=r["ring_timeout_seconds"],
                time_limit_seconds=r["time_limit_seconds"],
                menu=r["menu"],
            )
            for r in rows
        ]

    _RETURN_UNSTARTED: Final = """
        UPDATE calls SET status = 'scheduled', claimed_by = NULL, claimed_at = NULL
        WHERE claimed_by = $1 AND status = 'pending' AND dialed_at IS NULL
    """

    @translate_errors
    async def return_unstarted(self) -> int:
        """Shutdown: calls this instance claimed but never sent go back to scheduled."""
        result = await self.pool.execute(self._RETURN_UNSTARTED, self.instance_id)
        return int(result.split()[-1])

    # What the TwiML of a call is made from ($2: the caller id of last resort).
    _SCRIPT_OF_CALL: Final = """
        SELECT c.script_template, c.menu, c.menu_repeats, c.voicemail_template, c.machine_detection,
               c.language, c.voice, coalesce(c.caller_id, $2) AS from_number,
               ct.first_name, ct.last_name, ct.phone_number, ct.email, ct.custom_fields,
               coalesce(cc.fields, '{}'::jsonb) AS fields
        FROM calls k JOIN campaigns c ON c.id = k.campaign_id JOIN contacts ct ON ct.id = k.contact_id
        LEFT JOIN campaign_contacts cc ON cc.campaign_id = k.campaign_id AND cc.contact_id = k.contact_id
        WHERE k.id = $1
    """

    @translate_errors
    async def call_for_twiml(self, call_id: uuid.UUID) -> CallScript | None:
        """What a call says (its campaign's script, menu, voicemail, voice, and its
        contact), to serve its TwiML document; None for an unknown call."""
        row = await self.pool.fetchrow(self._SCRIPT_OF_CALL, call_id, self.default_from_number)
        return None if row is None else script_from_row(row)


def script_from_row(row: asyncpg.Record) -> CallScript:
    """A CallScript from a row with the columns of `_SCRIPT_OF_CALL`."""
    return CallScript(
        contact=contact_from_row(row),
        from_number=row["from_number"],
        script_template=row["script_template"],
        menu=row["menu"],
        menu_repeats=row["menu_repeats"],
        voicemail_template=row["voicemail_template"],
        machine_detection=row["machine_detection"],
        language=row["language"],
        voice=row["voice"],
    )
