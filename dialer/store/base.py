"""What every part of the engine's store shares: the pool, the instance's identity,
the clock, and how a campaigns row is read.

Each part (instances, housekeeping, claims, call events, live calls) is a subclass of
`StoreBase` in a module of its own; `dialer.store.lifecycle.LifecycleStore` puts them
together. Times are naive UTC `datetime`s from the injected clock, so tests can move
time without sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from dialer.models import Campaign, CampaignStatus, Contact

Clock = Callable[[], datetime]
# A connection of the pool, inside `async with pool.acquire()`.
Conn = asyncpg.Connection | PoolConnectionProxy


def utcnow() -> datetime:
    """The current time as the naive UTC datetime the schema stores."""
    return datetime.now(UTC).replace(tzinfo=None)


class StoreBase:
    """The engine's view of the database. One per process; safe for concurrent use.
    Every public coroutine of a subclass is one short transaction (or one statement)
    behind `dialer.database.translate_errors`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        instance_id: uuid.UUID,
        default_timezone: str = "UTC",
        default_from_number: str = "",
        validate_template: Callable[[str], None],
        clock: Clock = utcnow,
    ) -> None:
        self.pool = pool
        self.validate_template = validate_template
        self.instance_id = instance_id
        self.default_timezone = default_timezone
        self.default_from_number = default_from_number
        self.clock = clock
        self._zones: frozenset[str] | None = None  # the zones PostgreSQL knows, read once


# The columns of models.Campaign, in one place for every query that reads campaigns.
CAMPAIGN_COLUMNS: Final = """
    id, name, status, script_template, caller_id, timezone, schedule_start, schedule_end,
    calling_hours_start, calling_hours_end, calling_days, max_retries, retry_delay_minutes,
    max_concurrent_calls, machine_detection, machine_is_failure, record_calls,
    ring_timeout_seconds, time_limit_seconds, last_error, total_calls, holiday_calendar,
    menu, menu_repeats, retry_no_response, voicemail_template, language, voice,
    calls_per_second
"""


def campaign_from_row(row: asyncpg.Record) -> Campaign:
    """A models.Campaign from a row of CAMPAIGN_COLUMNS."""
    fields = dict(row)
    fields["status"] = CampaignStatus(fields["status"])
    fields["calling_days"] = list(fields["calling_days"]) if fields["calling_days"] is not None else None
    if fields["calls_per_second"] is not None:
        fields["calls_per_second"] = float(fields["calls_per_second"])  # numeric arrives as Decimal
    return Campaign(**fields)


def contact_from_row(row: asyncpg.Record) -> Contact:
    """A models.Contact from a row with the contact's columns and its `fields` in the
    campaign (either JSON object may be NULL: read as empty)."""
    return Contact(
        first_name=row["first_name"],
        last_name=row["last_name"],
        phone_number=row["phone_number"],
        email=row["email"],
        custom_fields=row["custom_fields"] or {},
        fields=row["fields"] or {},
    )


CAMPAIGNS_SQL: Final = (
    f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE status = ANY($1::campaign_status[])"
)


async def campaigns_in(conn: Conn | asyncpg.Pool, statuses: Sequence[CampaignStatus]) -> list[Campaign]:
    """Every campaign in one of these statuses."""
    rows = await conn.fetch(CAMPAIGNS_SQL, [s.value for s in statuses])
    return [campaign_from_row(r) for r in rows]


def in_window(c: Campaign, now: datetime) -> bool:
    """Whether `now` falls inside the campaign's schedule window."""
    return (c.schedule_start is None or c.schedule_start <= now) and (
        c.schedule_end is None or now <= c.schedule_end
    )
