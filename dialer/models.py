"""Plain data the modules pass to each other: statuses, rows, carrier events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, time
from enum import StrEnum
from typing import Any


class CampaignStatus(StrEnum):
    """campaigns.status (enum campaign_status, docs/schema.md)."""

    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class CallStatus(StrEnum):
    """calls.status (enum call_status, docs/schema.md)."""

    SCHEDULED = "scheduled"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.CANCELLED)


class Disposition(StrEnum):
    """campaign_contacts.call_status: where a contact stands in a campaign."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INVALID_NUMBER = "invalid_number"
    DO_NOT_CALL = "do_not_call"

    @property
    def is_final(self) -> bool:
        return self not in (Disposition.PENDING, Disposition.SCHEDULED, Disposition.IN_PROGRESS)


@dataclass(frozen=True)
class Campaign:
    """A campaigns row, as the daemon needs it."""

    id: uuid.UUID
    name: str
    status: CampaignStatus
    script_template: str | None
    caller_id: str | None
    timezone: str | None
    schedule_start: datetime | None
    schedule_end: datetime | None
    calling_hours_start: time | None
    calling_hours_end: time | None
    calling_days: list[int] | None
    max_retries: int
    retry_delay_minutes: int
    max_concurrent_calls: int | None
    machine_detection: bool
    machine_is_failure: bool
    record_calls: bool
    ring_timeout_seconds: int
    time_limit_seconds: int
    last_error: str | None
    # Calls rows ever created (the trigger-kept counter): it changes whenever calls are
    # scheduled (activation, retry), which is when the zones of due work can change.
    total_calls: int = 0
    # A calendar of the `holidays` package (ES, ES-MD, US-CA …): no calls on its public
    # holidays, in the contact's local date (docs/campaigns.md#calendar).
    holiday_calendar: str | None = None
    # Read by ClaimStore.dialable_campaigns only: a blackout day applies to this campaign
    # within a day of now, so the scheduler's pre-check must look (False elsewhere).
    blackout_near: bool = False
    # Interactive calls (docs/campaigns.md#menus): the keypad menu as stored (decoded
    # JSON; None = a one-way call), how often the script is read again for no key,
    # whether no_response is retried, the voicemail message, language and voice
    # (None: the configuration's).
    menu: Any = None
    menu_repeats: int = 1
    retry_no_response: bool = False
    voicemail_template: str | None = None
    language: str | None = None
    voice: str | None = None
    # Its own cap within the account's rate (docs/campaigns.md#dial-rate); None: the account's only.
    calls_per_second: float | None = None


@dataclass(frozen=True)
class Contact:
    """The fields of a contact a script template may use."""

    first_name: str | None
    last_name: str | None
    phone_number: str
    email: str | None
    custom_fields: dict[str, Any] = field(default_factory=dict)
    # campaign_contacts.fields: what the contact brings to this campaign (read first).
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimedCall:
    """A call this instance has claimed (status `pending`), with what dialing needs."""

    id: uuid.UUID
    campaign_id: uuid.UUID
    contact_id: uuid.UUID
    retry_count: int
    contact: Contact
    from_number: str
    script_template: str | None
    machine_detection: bool
    record_calls: bool
    ring_timeout_seconds: int
    time_limit_seconds: int
    # As on Campaign (docs/campaigns.md#menus).
    menu: Any = None
    menu_repeats: int = 1
    voicemail_template: str | None = None
    language: str | None = None
    voice: str | None = None
    calls_per_second: float | None = None  # the campaign's own cap when claimed: it paces alone

    @property
    def script(self) -> CallScript:
        """What this call says, for the TwiML builder."""
        return CallScript(
            contact=self.contact,
            from_number=self.from_number,
            script_template=self.script_template,
            menu=self.menu,
            menu_repeats=self.menu_repeats,
            voicemail_template=self.voicemail_template,
            machine_detection=self.machine_detection,
            language=self.language,
            voice=self.voice,
        )


@dataclass(frozen=True)
class CallScript:
    """Everything the TwiML of one call is made from: its contact, and its campaign's
    script, menu, voicemail message, caller id, language and voice (None: the
    configuration's)."""

    contact: Contact
    from_number: str
    script_template: str | None
    menu: Any = None
    menu_repeats: int = 1
    voicemail_template: str | None = None
    machine_detection: bool = False
    language: str | None = None
    voice: str | None = None

    @property
    def leaves_voicemail(self) -> bool:
        """Whether a machine that answers hears the voicemail message (and the TwiML
        is therefore decided when the carrier fetches it, knowing AnsweredBy)."""
        return self.machine_detection and self.voicemail_template is not None


@dataclass(frozen=True)
class KeyPress:
    """One keypad press, from a <Gather> action request. `keys` and `read` come from
    the action URL the daemon wrote (signed): how many keys the call had recorded and
    which reading of the script the gather was."""

    call_sid: str
    digit: str  # one keypad key
    keys: int
    read: int


@dataclass(frozen=True)
class KeyApplied:
    """What recording a key press did (`dialer_apply_key`, sql/0014)."""

    result: ApplyResult
    response: str | None = None  # recorded by this press
    script: CallScript | None = None  # the call's, when applied


@dataclass(frozen=True)
class KeyAnswer:
    """The TwiML answering a key press, and what recording the press did."""

    document: str
    applied: KeyApplied


@dataclass(frozen=True)
class CallEvent:
    """The carrier's word on a call, from a status callback or a REST fetch.

    `status` is Twilio's CallStatus string (queued, initiated, ringing, in-progress,
    completed, busy, no-answer, failed, canceled).
    """

    call_sid: str
    status: str
    duration: int | None = None
    answered_by: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    sequence_number: int | None = None
    timestamp: datetime | None = None  # when the carrier says it happened (UTC)
    start_time: datetime | None = None
    end_time: datetime | None = None


class DialIntent(StrEnum):
    """What the store does with a claimed call whose carrier request failed. The
    rules behind each live in SQL, in one place (sql/0009_attempt_end.sql)."""

    REQUEUE = "requeue"  # back to scheduled after a backoff; not an attempt
    FAIL_PERMANENT = "fail_permanent"  # the attempt ends; the number is wrong (invalid_number)
    FAIL_RETRYABLE = "fail_retryable"  # the attempt ends failed; retried while retries are left


@dataclass(frozen=True)
class DialSlots:
    """One grant of dial slots (sql/0016, dialer_take_dial_slots)."""

    db_now: float  # the database's clock when the slots were chosen, seconds since the Unix epoch
    offsets: list[float]  # seconds from db_now to each slot, ascending
    rate: float  # the account's rate in force: the least of the live instances'
    campaign_rate: float | None  # the campaign's own cap, when it is tighter than the account's
    live: int  # live instances sharing the rate, the caller included
    retry_after: float  # with no slot granted: seconds until one may come within reach


class ApplyResult(StrEnum):
    """What applying a carrier event did."""

    APPLIED = "applied"  # the call row (and maybe contact, retry, counters) changed
    IGNORED = "ignored"  # duplicate, out of order, or the call is already final
    UNKNOWN = "unknown"  # no call matches the call_id / CallSid
