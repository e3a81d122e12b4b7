"""What a campaign produced, for the operator: the `campaign_results` view (one row
per campaign contact, sql/0011) streamed for `dialer campaign export`, and the
attempts `dialer calls` lists (docs/campaigns.md#results)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from dialer.database import translate_errors

EXPORT_BATCH = 1000  # rows fetched per round trip while exporting


@dataclass(frozen=True)
class Attempt:
    """One calls row of a campaign, with its contact's name and number."""

    id: uuid.UUID
    contact_id: uuid.UUID
    first_name: str | None
    last_name: str | None
    phone_number: str
    retry_count: int
    status: str
    outcome: str | None
    error_code: int | None
    error_message: str | None
    answered_by: str | None
    response: str | None  # the callee's keypad answer (docs/campaigns.md#menus)
    digits: str | None  # every key pressed, in order
    duration: int | None
    call_sid: str | None
    dialed_at: datetime | None  # naive UTC
    ended_at: datetime | None  # naive UTC


class ResultsStore:
    """Reads of results, through one asyncpg connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    # The view's own columns, whatever they are: the export follows the view.
    _RESULTS: Final = """
        SELECT * FROM campaign_results WHERE campaign_id = $1
        ORDER BY last_name NULLS LAST, first_name NULLS LAST, phone_number, contact_id
    """

    @translate_errors
    async def result_columns(self) -> list[str]:
        """The columns of campaign_results, in order (the export's header)."""
        statement = await self._conn.prepare(self._RESULTS)
        return [a.name for a in statement.get_attributes()]

    async def results(self, campaign_id: uuid.UUID) -> AsyncIterator[dict[str, Any]]:
        """Every row of campaign_results for one campaign, in name order, read in
        batches by one cursor (one statement: one snapshot; bounded memory). A
        database failure leaves it as DatabaseUnavailable, through the caller's
        `database.connection` block."""
        async with self._conn.transaction(readonly=True):
            async for row in self._conn.cursor(self._RESULTS, campaign_id, prefetch=EXPORT_BATCH):
                yield dict(row)

    _ATTEMPTS: Final = """
        SELECT k.id, k.contact_id, ct.first_name, ct.last_name, ct.phone_number, k.retry_count,
               k.status::text AS status, k.outcome, k.error_code, k.error_message, k.answered_by,
               k.response, k.digits, k.duration, k.call_sid, k.dialed_at, k.ended_at
        FROM calls k JOIN contacts ct ON ct.id = k.contact_id
        WHERE k.campaign_id = $1 AND (NOT $2 OR k.status = 'failed')
        ORDER BY coalesce(k.dialed_at, k.scheduled_at), k.id
        LIMIT $3
    """

    @translate_errors
    async def attempts(self, campaign_id: uuid.UUID, *, failed_only: bool, limit: int) -> list[Attempt]:
        """The campaign's calls rows (only the failed ones if asked), oldest first."""
        rows = await self._conn.fetch(self._ATTEMPTS, campaign_id, failed_only, limit)
        return [Attempt(**dict(r)) for r in rows]
