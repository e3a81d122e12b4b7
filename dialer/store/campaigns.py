"""SQL for the operator's campaign commands: create, list, status transitions,
membership, and the progress snapshot `campaign status` renders.

The CLI only ever writes `campaigns.status` to steer a campaign; the NOTIFY trigger
on that column wakes the daemon (docs/campaigns.md#lifecycle).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any, Final

import asyncpg

from dialer.database import translate_errors
from dialer.errors import DialerError
from dialer.models import Campaign, CampaignStatus, Contact, Disposition
from dialer.status import DialingSnapshot
from dialer.store.base import CAMPAIGN_COLUMNS, campaign_from_row, contact_from_row

FINAL_CAMPAIGN_STATUSES = frozenset({CampaignStatus.COMPLETED, CampaignStatus.CANCELLED})
# What `campaign edit` may change (never the status, the counters or last_error).
EDITABLE_COLUMNS = frozenset(
    {
        "name", "description", "script_template", "calling_hours_start", "calling_hours_end",
        "calling_days", "timezone", "max_retries", "retry_delay_minutes", "caller_id",
        "max_concurrent_calls", "schedule_start", "schedule_end", "machine_detection", "record_calls",
        "holiday_calendar", "menu", "menu_repeats", "retry_no_response", "voicemail_template",
        "language", "voice", "calls_per_second",
    }
)  # fmt: skip


@dataclass(frozen=True)
class NewCampaign:
    """The fields `campaign create` sets; None leaves the column's default."""

    name: str
    description: str | None = None
    script_template: str | None = None
    calling_hours_start: time | None = None
    calling_hours_end: time | None = None
    calling_days: list[int] | None = None
    timezone: str | None = None
    holiday_calendar: str | None = None
    max_retries: int | None = None
    retry_delay_minutes: int | None = None
    caller_id: str | None = None
    max_concurrent_calls: int | None = None
    schedule_start: datetime | None = None  # naive UTC
    schedule_end: datetime | None = None  # naive UTC
    machine_detection: bool = False
    record_calls: bool = False
    # Interactive calls (docs/campaigns.md#menus); None leaves the column's default.
    menu: Any = None  # decoded JSON, checked by the caller (dialer.menu.menu_problem)
    menu_repeats: int | None = None
    retry_no_response: bool = False
    voicemail_template: str | None = None
    language: str | None = None
    voice: str | None = None
    calls_per_second: float | None = None  # the campaign's own cap within the account's rate


# The name the status trigger gives its refusal (sql/0010_campaign_control.sql).
TRANSITION_CONSTRAINT: Final = "campaigns_status_transition"


class TransitionRefused(DialerError):
    """The database refused a status change; the message names both statuses."""


@dataclass(frozen=True)
class StatusChange:
    """A status write that was accepted: `before` == `after` when nothing changed."""

    before: CampaignStatus
    after: CampaignStatus

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class EditResult:
    """What `update` did: `status` is the campaign's status now (None: no campaign)."""

    changed: bool
    status: CampaignStatus | None


@dataclass(frozen=True)
class StatusHistoryEntry:
    """One row of campaign_status_history: from_status None is the creation."""

    from_status: CampaignStatus | None
    to_status: CampaignStatus
    changed_at: datetime  # naive UTC
    changed_by: str  # "role (application_name)"


@dataclass(frozen=True)
class CampaignMatch:
    """A campaign an operator's reference may mean."""

    id: uuid.UUID
    name: str
    status: CampaignStatus


@dataclass(frozen=True)
class CampaignSummary:
    """One line of `campaign list`."""

    id: uuid.UUID
    name: str
    status: CampaignStatus
    created_at: datetime  # naive UTC
    contacts: int
    total_calls: int
    pending_calls: int
    successful_calls: int
    failed_calls: int


@dataclass(frozen=True)
class CampaignProgress:
    """Everything `campaign status` shows about one campaign, read in one snapshot."""

    id: uuid.UUID
    name: str
    status: CampaignStatus
    last_error: str | None
    total_calls: int
    pending_calls: int
    successful_calls: int
    failed_calls: int
    contacts: int
    dispositions: dict[str, int] = field(default_factory=dict)
    # Contacts per latest answer (campaign_contacts.response): confirmed, opted_out, …
    responses: dict[str, int] = field(default_factory=dict)
    dialed_last_minute: int = 0
    next_due_at: datetime | None = None  # naive UTC
    now: datetime | None = None  # the database's clock (naive UTC) when read
    dialing: DialingSnapshot | None = None  # what says why it is not dialing, when read

    @property
    def finished_contacts(self) -> int:
        """Contacts with a final disposition."""
        return sum(n for status, n in self.dispositions.items() if status not in _OPEN_DISPOSITIONS)

    @property
    def is_final(self) -> bool:
        """The campaign will not change any more."""
        return self.status in FINAL_CAMPAIGN_STATUSES


_OPEN_DISPOSITIONS = frozenset(d for d in Disposition if not d.is_final)


OPEN_DISPOSITIONS: Final = ("pending", "scheduled", "in_progress")

# The scheduled calls already due, for one campaign row `c` at `now` ({zone}: the
# parameter holding the zone of last resort): whether any is due, whether any is
# inside its contact's calling hours by the claim's own rule (dialer_in_calling_hours
# in the contact's zone, else the campaign's), and the zone of the earliest one. The
# EXISTS stops at the first dialable call; when none is, it reads every due call of
# the campaign once (what one claim pass reads too).
DUE_WORK_COLUMNS: Final = """
    EXISTS (SELECT 1 FROM calls k
            WHERE k.campaign_id = c.id AND k.status = 'scheduled' AND k.scheduled_at <= {now}) AS due_now,
    EXISTS (SELECT 1 FROM calls k JOIN contacts ct ON ct.id = k.contact_id
            WHERE k.campaign_id = c.id AND k.status = 'scheduled' AND k.scheduled_at <= {now}
              AND dialer_may_call({now}, coalesce(ct.resolved_timezone, c.timezone, {zone}),
                                  c.calling_hours_start, c.calling_hours_end, c.calling_days,
                                  c.id, c.holiday_calendar)
           ) AS due_dialable,
    (SELECT coalesce(ct.resolved_timezone, c.timezone, {zone})
     FROM calls k JOIN contacts ct ON ct.id = k.contact_id
     WHERE k.campaign_id = c.id AND k.status = 'scheduled' AND k.scheduled_at <= {now}
     ORDER BY k.scheduled_at LIMIT 1) AS due_zone
"""


def day_columns(now: str, default_zone: str) -> str:
    """closed_day and next_open_day of campaign `c` (SQL) in its zone's local date at
    `now`, by the claim's own functions (sql/0012). Only for an active, valid campaign:
    no other status is explained by the day, and a calendar never loaded would make
    the search walk a year."""
    local = f"timezone(coalesce(c.timezone, {default_zone}), timezone('UTC', {now}))::date"
    dialable = "c.status = 'active' AND c.last_error IS NULL"
    return f"""
        CASE WHEN {dialable} THEN dialer_closed_day({local}, c.id, c.holiday_calendar) END AS closed_day,
        CASE WHEN {dialable} THEN dialer_next_open_day({local}, c.id, c.holiday_calendar, c.calling_days)
        END AS next_open_day"""


def dialing_snapshot(row: Any, live_instances: int | None = None) -> DialingSnapshot:
    """The DialingSnapshot of a row holding a campaign's columns, `now`, `zone`,
    `in_calling_hours`, the contact and call counts, and (when read) DUE_WORK_COLUMNS."""
    keys = set(row.keys())
    return DialingSnapshot(
        status=str(row["status"]),
        last_error=row["last_error"],
        now=row["now"],
        contacts=row["contacts"],
        open_contacts=row["open_contacts"],
        live_calls=row["live_calls"],
        next_due_at=row["next_due_at"],
        live_instances=row["live_instances"] if live_instances is None else live_instances,
        zone=row["zone"],
        in_calling_hours=bool(row["in_calling_hours"]),
        hours_start=row["calling_hours_start"],
        hours_end=row["calling_hours_end"],
        days=list(row["calling_days"]) if row["calling_days"] is not None else None,
        schedule_start=row["schedule_start"],
        schedule_end=row["schedule_end"],
        due_now=row["due_now"] if "due_now" in keys else None,
        due_dialable=row["due_dialable"] if "due_dialable" in keys else None,
        due_zone=row["due_zone"] if "due_zone" in keys else None,
        closed_day=row["closed_day"] if "closed_day" in keys else None,
        next_open_day=row["next_open_day"] if "next_open_day" in keys else None,
    )


class CampaignStore:
    """Campaign rows, through one asyncpg connection (or pool)."""

    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._conn = conn

    @translate_errors
    async def create(self, new: NewCampaign) -> uuid.UUID:
        """Insert a draft campaign; columns left None take their defaults."""
        values: dict[str, Any] = {
            "name": new.name,
            "description": new.description,
            "script_template": new.script_template,
            "calling_hours_start": new.calling_hours_start,
            "calling_hours_end": new.calling_hours_end,
            "calling_days": new.calling_days,
            "timezone": new.timezone,
            "holiday_calendar": new.holiday_calendar,
            "max_retries": new.max_retries,
            "retry_delay_minutes": new.retry_delay_minutes,
            "caller_id": new.caller_id,
            "max_concurrent_calls": new.max_concurrent_calls,
            "schedule_start": new.schedule_start,
            "schedule_end": new.schedule_end,
            "machine_detection": new.machine_detection,
            "record_calls": new.record_calls,
            "menu": new.menu,
            "menu_repeats": new.menu_repeats,
            "retry_no_response": new.retry_no_response,
            "voicemail_template": new.voicemail_template,
            "language": new.language,
            "voice": new.voice,
            "calls_per_second": new.calls_per_second,
        }
        # Only the columns given, so the schema's defaults (max_retries …) stay the one truth.
        given = {k: v for k, v in values.items() if v is not None}
        columns = ", ".join(given)
        params = ", ".join(f"${i}" for i in range(1, len(given) + 1))
        new_id = await self._conn.fetchval(
            f"INSERT INTO campaigns ({columns}) VALUES ({params}) RETURNING id", *given.values()
        )
        assert isinstance(new_id, uuid.UUID)
        return new_id

    _GET: Final = f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"

    @translate_errors
    async def get(self, campaign_id: uuid.UUID) -> Campaign | None:
        """The campaign, or None."""
        row = await self._conn.fetchrow(self._GET, campaign_id)
        return campaign_from_row(row) if row is not None else None

    # An exact name, or an id prefix ($2: lower-case hex without dashes; NULL when
    # the text cannot be one). The campaigns table is small: a scan is fine.
    _FIND: Final = """
        SELECT id, name, status::text AS status
        FROM campaigns
        WHERE name = $1 OR replace(id::text, '-', '') LIKE $2 || '%'
        ORDER BY created_at DESC, id
        LIMIT $3
    """

    @translate_errors
    async def find(self, text: str, limit: int = 20) -> list[CampaignMatch]:
        """Campaigns whose exact name is `text` or whose id starts with it (dashes
        optional, any case), newest first."""
        hex_prefix = text.strip().lower().replace("-", "")
        prefix = hex_prefix if hex_prefix and all(ch in "0123456789abcdef" for ch in hex_prefix) else None
        rows = await self._conn.fetch(self._FIND, text, prefix, limit)
        return [CampaignMatch(id=r["id"], name=r["name"], status=CampaignStatus(r["status"])) for r in rows]

    _LIST: Final = """
        SELECT c.id, c.name, c.status::text AS status, c.created_at,
               c.total_calls, c.successful_calls, c.failed_calls, c.pending_calls,
               (SELECT count(*) FROM campaign_contacts cc WHERE cc.campaign_id = c.id) AS contacts
        FROM campaigns c
        ORDER BY c.created_at DESC, c.id
    """

    @translate_errors
    async def list_all(self) -> list[CampaignSummary]:
        """Every campaign, newest first, with its contact count."""
        rows = await self._conn.fetch(self._LIST)
        return [
            CampaignSummary(
                id=r["id"],
                name=r["name"],
                status=CampaignStatus(r["status"]),
                created_at=r["created_at"],
                contacts=r["contacts"],
                total_calls=r["total_calls"],
                pending_calls=r["pending_calls"],
                successful_calls=r["successful_calls"],
                failed_calls=r["failed_calls"],
            )
            for r in rows
        ]

    _OPEN_IDS: Final = (
        "SELECT id FROM campaigns WHERE status NOT IN ('completed', 'cancelled') ORDER BY created_at, id"
    )

    @translate_errors
    async def open_ids(self) -> list[uuid.UUID]:
        """Campaigns that are not final, oldest first."""
        rows = await self._conn.fetch(self._OPEN_IDS)
        return [r["id"] for r in rows]

    # The status before is read under the row lock (FOR UPDATE waits for a concurrent
    # writer and returns its result), so it is the status the trigger judged.
    # The same status is not written at all (not even updated_at moves).
    _SET_STATUS: Final = """
        WITH old AS (SELECT id, status FROM campaigns WHERE id = $1 FOR UPDATE),
        changed AS (
            UPDATE campaigns c SET status = $2::campaign_status
            FROM old WHERE c.id = old.id AND old.status <> $2::campaign_status
        )
        SELECT status::text FROM old
    """

    @translate_errors
    async def set_status(self, campaign_id: uuid.UUID, to: CampaignStatus) -> StatusChange | None:
        """Set the campaign's status; None when there is no such campaign. Whether the
        change is allowed is the database's rule (sql/0010, docs/invariants.md#7): a
        refused change raises TransitionRefused with the database's words and changes
        nothing; setting the status the campaign already has changes nothing."""
        try:
            before = await self._conn.fetchval(self._SET_STATUS, campaign_id, to.value)
        except asyncpg.CheckViolationError as exc:
            if exc.constraint_name != TRANSITION_CONSTRAINT:
                raise
            raise TransitionRefused(exc.message) from None
        if before is None:
            return None
        return StatusChange(before=CampaignStatus(before), after=to)

    _HISTORY: Final = """
        SELECT from_status::text, to_status::text, changed_at, changed_by
        FROM campaign_status_history WHERE campaign_id = $1 ORDER BY id
    """

    @translate_errors
    async def history(self, campaign_id: uuid.UUID) -> list[StatusHistoryEntry]:
        """Every status the campaign has had, oldest first (the creation included)."""
        rows = await self._conn.fetch(self._HISTORY, campaign_id)
        return [
            StatusHistoryEntry(
                from_status=CampaignStatus(r["from_status"]) if r["from_status"] is not None else None,
                to_status=CampaignStatus(r["to_status"]),
                changed_at=r["changed_at"],
                changed_by=r["changed_by"],
            )
            for r in rows
        ]

    _ZONES: Final = "SELECT name FROM pg_timezone_names"

    @translate_errors
    async def known_zones(self) -> frozenset[str]:
        """The IANA zones PostgreSQL knows (calling hours are computed in SQL)."""
        return frozenset(r["name"] for r in await self._conn.fetch(self._ZONES))

    # Only the given columns; only while the status allows it (checked and written in
    # one statement, so a concurrent start cannot slip between the check and the write).
    _UPDATE: Final = """
        UPDATE campaigns SET {assignments}
        WHERE id = $1 AND status = ANY($2::campaign_status[])
        RETURNING true
    """

    _STATUS: Final = "SELECT status::text FROM campaigns WHERE id = $1"

    @translate_errors
    async def update(
        self, campaign_id: uuid.UUID, changes: dict[str, Any], allowed_in: Collection[CampaignStatus]
    ) -> EditResult:
        """Set `changes` (column → value, None = NULL) if the campaign's status is one
        of `allowed_in`; `status` of the result is the status now (None: no campaign)."""
        unknown = set(changes) - EDITABLE_COLUMNS
        if unknown:
            raise ValueError(f"not editable: {sorted(unknown)}")
        assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=3))
        changed = await self._conn.fetchval(
            self._UPDATE.format(assignments=assignments),
            campaign_id,
            [s.value for s in allowed_in],
            *changes.values(),
        )
        current = await self._conn.fetchval(self._STATUS, campaign_id)
        return EditResult(changed=bool(changed), status=CampaignStatus(current) if current else None)

    # The sets of non-blank keys {{custom.KEY}} can read for each of the campaign's
    # contacts (its fields in this campaign and its own custom_fields), with how many
    # contacts have each: few distinct sets in practice (one per pattern of blank
    # columns), so the keys are compared in Python by the one normalisation rule
    # (twiml.field_key) instead of a second copy of it in SQL.
    _KEY_SETS: Final = """
        SELECT keys, count(*) AS n
        FROM (SELECT array(SELECT DISTINCT f.key
                           FROM (SELECT * FROM jsonb_each_text(ct.custom_fields)
                                 UNION ALL SELECT * FROM jsonb_each_text(cc.fields)) f
                           WHERE btrim(f.value) <> '' ORDER BY 1) AS keys
              FROM campaign_contacts cc JOIN contacts ct ON ct.id = cc.contact_id
              WHERE cc.campaign_id = $1) s
        GROUP BY keys
    """

    @translate_errors
    async def custom_key_sets(self, campaign_id: uuid.UUID) -> list[tuple[list[str], int]]:
        """(non-blank custom-field keys, number of contacts with exactly those) for the campaign."""
        rows = await self._conn.fetch(self._KEY_SETS, campaign_id)
        return [(list(r["keys"]), int(r["n"])) for r in rows]

    _SAMPLE: Final = """
        SELECT ct.id, ct.first_name, ct.last_name, ct.phone_number, ct.email, ct.custom_fields,
               cc.fields
        FROM campaign_contacts cc JOIN contacts ct ON ct.id = cc.contact_id
        WHERE cc.campaign_id = $1
        ORDER BY cc.created_at, cc.id
        LIMIT $2
    """

    @translate_errors
    async def sample_contacts(self, campaign_id: uuid.UUID, limit: int) -> list[tuple[uuid.UUID, Contact]]:
        """The campaign's first `limit` contacts (in the order they were added), as a
        call renders them."""
        rows = await self._conn.fetch(self._SAMPLE, campaign_id, limit)
        return [(r["id"], contact_from_row(r)) for r in rows]

    @translate_errors
    async def add_all_contacts(self, campaign_id: uuid.UUID) -> int:
        """Link every contact into the campaign; returns how many were not in it yet."""
        added = await self._conn.fetchval(
            """
            WITH ins AS (
                INSERT INTO campaign_contacts (campaign_id, contact_id)
                SELECT $1, id FROM contacts
                ON CONFLICT ON CONSTRAINT campaign_contacts_campaign_contact_key DO NOTHING
                RETURNING 1
            )
            SELECT count(*) FROM ins
            """,
            campaign_id,
        )
        return int(added)

    _DIALING: Final = f"""
        WITH m AS (SELECT timezone('utc', now()) AS now)
        SELECT m.now, c.status::text AS status, c.last_error, c.schedule_start, c.schedule_end,
               c.calling_hours_start, c.calling_hours_end, c.calling_days,
               coalesce(c.timezone, $2) AS zone,
               dialer_in_calling_hours(m.now, coalesce(c.timezone, $2), c.calling_hours_start,
                                       c.calling_hours_end, c.calling_days) AS in_calling_hours,
               (SELECT count(*) FROM dialer_instances i
                WHERE i.stopped_at IS NULL
                  AND i.heartbeat_at > m.now - make_interval(secs => $3)) AS live_instances,
               (SELECT count(*) FROM campaign_contacts cc WHERE cc.campaign_id = c.id) AS contacts,
               (SELECT count(*) FROM campaign_contacts cc
                WHERE cc.campaign_id = c.id AND cc.call_status IN {OPEN_DISPOSITIONS!r}) AS open_contacts,
               (SELECT count(*) FROM calls k
                WHERE k.campaign_id = c.id AND k.status IN ('pending', 'in_progress')) AS live_calls,
               (SELECT min(k.scheduled_at) FROM calls k
                WHERE k.campaign_id = c.id AND k.status = 'scheduled') AS next_due_at,
               {DUE_WORK_COLUMNS.format(now="m.now", zone="$2")},
               {day_columns("m.now", "$2")}
        FROM m, campaigns c WHERE c.id = $1
    """

    @translate_errors
    async def dialing(
        self, campaign_id: uuid.UUID, *, default_timezone: str, instance_timeout_seconds: float
    ) -> DialingSnapshot | None:
        """What decides whether the campaign dials now (dialer.status.idle_reason says
        why not); None when there is no such campaign. `default_timezone` and
        `instance_timeout_seconds` are the configuration's (dialer.*)."""
        row = await self._conn.fetchrow(
            self._DIALING, campaign_id, default_timezone, instance_timeout_seconds
        )
        return dialing_snapshot(row) if row is not None else None

    @translate_errors
    async def live_instances(self, instance_timeout_seconds: float) -> int:
        """Daemons whose heartbeat is fresher than `instance_timeout_seconds`."""
        return int(await self._conn.fetchval(self._LIVE_INSTANCES, instance_timeout_seconds))

    _LIVE_INSTANCES: Final = """
        SELECT count(*) FROM dialer_instances
        WHERE stopped_at IS NULL AND heartbeat_at > timezone('utc', now()) - make_interval(secs => $1)
    """

    @translate_errors
    async def progress(self, campaign_id: uuid.UUID) -> CampaignProgress | None:
        """Counters, dispositions, responses, dial rate and next due call of one campaign."""
        row = await self._conn.fetchrow(
            """
            SELECT c.id, c.name, c.status::text AS status, c.last_error,
                   c.total_calls, c.pending_calls, c.successful_calls, c.failed_calls,
                   (SELECT coalesce(jsonb_object_agg(d.call_status, d.n), '{}'::jsonb)
                    FROM (SELECT call_status, count(*) AS n FROM campaign_contacts
                          WHERE campaign_id = c.id GROUP BY call_status) d) AS dispositions,
                   (SELECT coalesce(jsonb_object_agg(r.response, r.n), '{}'::jsonb)
                    FROM (SELECT response, count(*) AS n FROM campaign_contacts
                          WHERE campaign_id = c.id AND response IS NOT NULL
                          GROUP BY response) r) AS responses,
                   (SELECT count(*) FROM calls k
                    WHERE k.campaign_id = c.id AND k.status <> 'scheduled'
                      AND k.dialed_at > timezone('utc', now()) - interval '1 minute') AS dialed_last_minute,
                   (SELECT min(k.scheduled_at) FROM calls k
                    WHERE k.campaign_id = c.id AND k.status = 'scheduled') AS next_due_at,
                   timezone('utc', now()) AS now
            FROM campaigns c WHERE c.id = $1
            """,
            campaign_id,
        )
        if row is None:
            return None
        dispositions = {str(k): int(v) for k, v in row["dispositions"].items()}
        return CampaignProgress(
            id=row["id"],
            name=row["name"],
            status=CampaignStatus(row["status"]),
            last_error=row["last_error"],
            total_calls=row["total_calls"],
            pending_calls=row["pending_calls"],
            successful_calls=row["successful_calls"],
            failed_calls=row["failed_calls"],
            contacts=sum(dispositions.values()),
            dispositions=dispositions,
            responses={str(k): int(v) for k, v in row["responses"].items()},
            dialed_last_minute=row["dialed_last_minute"],
            next_due_at=row["next_due_at"],
            now=row["now"],
        )
