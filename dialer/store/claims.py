"""Claims and the dial gate (docs/architecture.md, steps 2 and 3): which campaigns
can dial, claiming their due calls inside calling hours, the gate right before each
carrier request, and handing a claim back."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from dialer.database import translate_errors
from dialer.models import CallStatus, Campaign, ClaimedCall
from dialer.store.base import CAMPAIGN_COLUMNS, StoreBase, campaign_from_row, contact_from_row, in_window
from dialer.store.group_commit import GroupCommit


@dataclass(frozen=True)
class DueCounts:
    """Due calls: inside their contact's calling hours and days now, and outside them."""

    dialable: int
    held: int


class ClaimStore(StoreBase):
    """Moving due calls from scheduled to pending (this instance's), and back."""

    # Active campaigns, each with whether a blackout day applies to it within a day of
    # $1 (a contact's local date is at most a day from the UTC date): the scheduler's
    # zone pre-check then looks even at a campaign without hours or a calendar.
    _DIALABLE: Final = f"""
        SELECT {CAMPAIGN_COLUMNS},
               EXISTS (SELECT 1 FROM blackout_dates b
                       WHERE (b.campaign_id = campaigns.id OR b.campaign_id IS NULL)
                         AND b.day BETWEEN $1::date - 1 AND $1::date + 1) AS blackout_near
        FROM campaigns WHERE status = 'active'
    """

    @translate_errors
    async def dialable_campaigns(self) -> list[Campaign]:
        """Active, valid campaigns inside their schedule window."""
        now = self.clock()
        campaigns = [campaign_from_row(r) for r in await self.pool.fetch(self._DIALABLE, now)]
        return [c for c in campaigns if c.last_error is None and in_window(c, now)]

    # Up to $7 due calls of campaign $1 at time $2, inside calling hours ($3 zone
    # fallback, $4-$6 hours and days) on an open local date ($9 holiday calendar;
    # docs/invariants.md#9), for contacts without a live call and numbers without one
    # (several contacts may share a number: one is rung at a time, the earliest due in
    # this pass, docs/invariants.md#1); those whose
    # number is on do_not_call are cancelled (the contact becomes do_not_call), the
    # rest claimed by instance $8. Returns the claimed calls with their contacts and
    # the contacts' fields in this campaign (for {{custom.KEY}}).
    CLAIM_SQL: Final = """
        WITH candidates AS (
            SELECT k.id, k.contact_id, ct.phone_number, k.scheduled_at
            FROM calls k
            JOIN contacts ct ON ct.id = k.contact_id
            WHERE k.campaign_id = $1 AND k.status = 'scheduled' AND k.scheduled_at <= $2
              AND ct.number_valid
              -- The scheduler's campaign list is cached between housekeeping passes: the
              -- claim itself re-checks that the campaign is still dialable right now.
              AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = $1 AND c.status = 'active'
                          AND c.last_error IS NULL
                          AND (c.schedule_start IS NULL OR c.schedule_start <= $2)
                          AND (c.schedule_end IS NULL OR $2 <= c.schedule_end))
              -- dialer_may_call's two terms (sql/0012), the closed dates taken once
              -- (an uncorrelated subquery: one evaluation per statement, not per row).
              AND dialer_in_calling_hours($2, coalesce(ct.resolved_timezone, $3), $4, $5, $6)
              AND timezone(coalesce(ct.resolved_timezone, $3), timezone('UTC', $2))::date
                  <> ALL ((SELECT dialer_closed_dates($2, $1, $9))::date[])
              -- No live call for the contact or the number. Uncorrelated NOT IN: the
              -- live calls are read once per statement into a hash that each candidate
              -- probes. Written as correlated NOT EXISTS, they were planned (live calls
              -- being a sliver of the table) as a scan of every live call per candidate:
              -- 43 of a claim's 51 ms at a million due and 2,150 live, minutes when no
              -- due call is inside its hours. Neither column of the lists is NULL (NOT
              -- IN would then keep nothing).
              AND k.contact_id NOT IN (SELECT l.contact_id FROM calls l
                                       WHERE l.status IN ('pending', 'in_progress'))
              AND ct.phone_number NOT IN (SELECT l.dialed_number FROM calls l
                                          WHERE l.status IN ('pending', 'in_progress')
                                            AND l.dialed_number IS NOT NULL)
            ORDER BY k.scheduled_at
            LIMIT $7
            FOR UPDATE OF k SKIP LOCKED
        ), flagged AS MATERIALIZED (
            -- Materialized: inlined, the do-not-call probe ran once per CASE below.
            -- DISTINCT ON: one call per number in a pass (FOR UPDATE cannot be combined
            -- with it above; the rows left out stay scheduled for a later pass).
            SELECT DISTINCT ON (cand.phone_number) cand.id, cand.contact_id, cand.phone_number,
                   EXISTS (SELECT 1 FROM do_not_call d WHERE d.phone_number = cand.phone_number) AS blocked
            FROM candidates cand
            ORDER BY cand.phone_number, cand.scheduled_at
        ), claimed AS (
            UPDATE calls k
            SET status = CASE WHEN f.blocked THEN 'cancelled' ELSE 'pending' END::call_status,
                outcome = CASE WHEN f.blocked THEN 'do-not-call' END,
                claimed_by = CASE WHEN f.blocked THEN NULL ELSE $8::uuid END,
                claimed_at = $2,
                dialed_number = CASE WHEN f.blocked THEN NULL ELSE f.phone_number END
            FROM flagged f
            WHERE k.id = f.id
            RETURNING k.id, k.contact_id, k.retry_count, k.status
        ), blocked AS (
            UPDATE campaign_contacts cc SET call_status = 'do_not_call'
            FROM claimed
            WHERE claimed.status = 'cancelled' AND cc.campaign_id = $1 AND cc.contact_id = claimed.contact_id
        )
        SELECT claimed.id, claimed.contact_id, claimed.retry_count,
               ct.first_name, ct.last_name, ct.phone_number, ct.email, ct.custom_fields,
               coalesce(cc.fields, '{}'::jsonb) AS fields
        FROM claimed JOIN contacts ct ON ct.id = claimed.contact_id
        LEFT JOIN campaign_contacts cc ON cc.campaign_id = $1 AND cc.contact_id = claimed.contact_id
        WHERE claimed.status = 'pending'
    """
    # The campaign's own cap, counted across instances under its row lock.
    _LOCK_CAMPAIGN: Final = "SELECT 1 FROM campaigns WHERE id = $1 FOR UPDATE"
    _LIVE_IN_CAMPAIGN: Final = (
        "SELECT count(*) FROM calls WHERE campaign_id = $1 AND status IN ('pending', 'in_progress')"
    )

    @translate_errors
    async def claim(self, campaign: Campaign, limit: int) -> list[ClaimedCall]:
        """Claim up to `limit` due calls of one campaign inside their calling hours
        (status scheduled → pending, claimed_by = this instance). Due calls whose
        number is on the do-not-call list are cancelled instead and the contact
        becomes do_not_call. The campaign's own max_concurrent_calls is honoured
        across instances by locking its row while counting."""
        if limit <= 0:
            return []
        now = self.clock()
        args = (
            campaign.timezone or self.default_timezone,
            campaign.calling_hours_start,
            campaign.calling_hours_end,
            campaign.calling_days,
        )
        calendar = campaign.holiday_calendar
        if campaign.max_concurrent_calls is None:
            # One statement is atomic on its own: no BEGIN/COMMIT round trips per pass.
            rows = await self.pool.fetch(
                self.CLAIM_SQL, campaign.id, now, *args, limit, self.instance_id, calendar
            )
            return self._claimed(campaign, rows)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(self._LOCK_CAMPAIGN, campaign.id)
            live = await conn.fetchval(self._LIVE_IN_CAMPAIGN, campaign.id)
            limit = min(limit, campaign.max_concurrent_calls - live)
            if limit <= 0:
                return []
            rows = await conn.fetch(
                self.CLAIM_SQL, campaign.id, now, *args, limit, self.instance_id, calendar
            )
        return self._claimed(campaign, rows)

    def _claimed(self, campaign: Campaign, rows: Sequence[asyncpg.Record]) -> list[ClaimedCall]:
        from_number = campaign.caller_id or self.default_from_number
        return [
            ClaimedCall(
                id=r["id"],
                campaign_id=campaign.id,
                contact_id=r["contact_id"],
                retry_count=r["retry_count"],
                contact=contact_from_row(r),
                from_number=from_number,
                script_template=campaign.script_template,
                machine_detection=campaign.machine_detection,
                record_calls=campaign.record_calls,
                ring_timeout_seconds=campaign.ring_timeout_seconds,
                time_limit_seconds=campaign.time_limit_seconds,
                menu=campaign.menu,
                menu_repeats=campaign.menu_repeats,
                voicemail_template=campaign.voicemail_template,
                language=campaign.language,
                voice=campaign.voice,
                calls_per_second=campaign.calls_per_second,
            )
            for r in rows
        ]

    _ZONES_OF_DUE_WORK: Final = """
        SELECT DISTINCT coalesce(ct.resolved_timezone, $2) AS zone
        FROM calls k JOIN contacts ct ON ct.id = k.contact_id
        WHERE k.campaign_id = $1 AND k.status IN ('scheduled', 'pending', 'in_progress')
    """

    @translate_errors
    async def campaign_zones(self, campaign: Campaign) -> list[str]:
        """The distinct time zones of the contacts this campaign has open calls for (a
        scan of its due work: cache it). Live calls count too: one handed back, or
        followed by a retry, is due work again without a new zone appearing."""
        rows = await self.pool.fetch(
            self._ZONES_OF_DUE_WORK, campaign.id, campaign.timezone or self.default_timezone
        )
        return [r["zone"] for r in rows]

    _ANY_ZONE_OPEN: Final = """
        SELECT coalesce(bool_or(dialer_may_call($1, z, $2, $3, $4, $6, $7)), false)
        FROM unnest($5::text[]) AS z
    """

    @translate_errors
    async def any_zone_open(self, campaign: Campaign, zones: Sequence[str]) -> bool:
        """Whether it is inside the campaign's calling hours and days, on a date that
        is no holiday or blackout day, now in any of these zones: by
        `dialer_may_call`, whose terms the claim spells out (sql/0012)."""
        if not zones:
            return False
        return bool(
            await self.pool.fetchval(
                self._ANY_ZONE_OPEN,
                self.clock(),
                campaign.calling_hours_start,
                campaign.calling_hours_end,
                campaign.calling_days,
                list(zones),
                campaign.id,
                campaign.holiday_calendar,
            )
        )

    # Due calls of these campaigns (at most $3, it is a gauge), split by whether the
    # contact may be called now: inside the campaign's calling hours and days, on a local
    # date that is no holiday or blackout day ($4: the zone of last resort). Counted per
    # (campaign, zone): the test runs once per zone.
    _DUE_COUNTS: Final = """
        WITH due AS (
            SELECT k.campaign_id, k.contact_id FROM calls k
            WHERE k.campaign_id = ANY($1::uuid[]) AND k.status = 'scheduled' AND k.scheduled_at <= $2
            LIMIT $3
        ), zones AS (
            SELECT due.campaign_id, coalesce(ct.resolved_timezone, c.timezone, $4) AS zone, count(*) AS n
            FROM due JOIN contacts ct ON ct.id = due.contact_id JOIN campaigns c ON c.id = due.campaign_id
            GROUP BY 1, 2
        ), judged AS (
            SELECT z.n, dialer_may_call($2, z.zone, c.calling_hours_start, c.calling_hours_end,
                                        c.calling_days, c.id, c.holiday_calendar) AS open
            FROM zones z JOIN campaigns c ON c.id = z.campaign_id
        )
        SELECT coalesce(sum(n) FILTER (WHERE open), 0) AS dialable,
               coalesce(sum(n) FILTER (WHERE NOT open), 0) AS held
        FROM judged
    """

    @translate_errors
    async def due_counts(self, campaign_ids: Sequence[uuid.UUID], cap: int = 100_000) -> DueCounts:
        """Scheduled calls already due in these campaigns: how many could be dialed now
        and how many wait for their contact's calling hours or days, a holiday or a
        blackout day (capped: a gauge)."""
        row = await self.pool.fetchrow(
            self._DUE_COUNTS, list(campaign_ids), self.clock(), cap, self.default_timezone
        )
        assert row is not None  # an aggregate always returns one row
        return DueCounts(dialable=int(row["dialable"]), held=int(row["held"]))

    _NEXT_DUE: Final = (
        "SELECT min(scheduled_at) FROM calls WHERE campaign_id = ANY($1::uuid[]) AND status = 'scheduled'"
    )

    @translate_errors
    async def next_due_at(self, campaign_ids: Sequence[uuid.UUID]) -> datetime | None:
        """When the earliest scheduled call of these campaigns falls due."""
        value: datetime | None = await self.pool.fetchval(self._NEXT_DUE, list(campaign_ids))
        return value

    # The dial gate, for a batch of calls ($1 ids, $2 each one's time, $5 each one's
    # `again`; group commit): a call passes while still pending, claimed by $3 and not
    # yet dialed (or, with `again`, passed by this gate before and not sent: its dial
    # slot was missed), its campaign active, valid and inside its window at its time,
    # the contact inside calling hours on an open local date ($4: the zone of last
    # resort) and its number not on do_not_call (it may have opted out in another
    # campaign since the claim: docs/invariants.md#8). Writes dialed_at; returns the
    # calls that passed.
    BEGIN_DIAL_SQL: Final = """
        UPDATE calls k SET dialed_at = t.at
        FROM unnest($1::uuid[], $2::timestamp[], $5::boolean[]) AS t(id, at, again), campaigns c, contacts ct
        WHERE k.id = t.id AND k.status = 'pending' AND k.claimed_by = $3
          AND (k.dialed_at IS NULL OR (t.again AND k.call_sid IS NULL))
          AND c.id = k.campaign_id AND c.status = 'active' AND c.last_error IS NULL
          AND (c.schedule_start IS NULL OR c.schedule_start <= t.at)
          AND (c.schedule_end IS NULL OR t.at <= c.schedule_end)
          AND ct.id = k.contact_id
          AND dialer_may_call(t.at, coalesce(ct.resolved_timezone, c.timezone, $4),
                              c.calling_hours_start, c.calling_hours_end, c.calling_days,
                              c.id, c.holiday_calendar)
          AND NOT EXISTS (SELECT 1 FROM do_not_call d WHERE d.phone_number = ct.phone_number)
        RETURNING k.id
    """

    @translate_errors
    async def begin_dial(self, call_id: uuid.UUID, again: bool = False) -> bool:
        """The gate right before a carrier request: succeeds only while the campaign
        is active, inside its window, the contact inside calling hours on a day that
        is no holiday or blackout day in its own zone and its number not on the
        do-not-call list — and records dialed_at first, so after a crash we know a
        request may have left (a refused claim handed back is cancelled by the next
        claim when the number is on the list). Gates opened at nearly the same moment
        share one statement (group commit). `again`: this instance passed the gate
        for the call before but sent nothing (it missed its dial slot,
        docs/architecture.md#pacing)."""
        return await self._dial_gates.submit((call_id, self.clock(), again))

    @functools.cached_property
    def _dial_gates(self) -> GroupCommit[tuple[uuid.UUID, datetime, bool], bool]:
        return GroupCommit(self._begin_dials)

    async def _begin_dials(self, items: Sequence[tuple[uuid.UUID, datetime, bool]]) -> list[bool]:
        """One BEGIN_DIAL_SQL for the batch (in id order, so batches lock alike)."""
        ordered = sorted(items)
        passed = await self.pool.fetch(
            self.BEGIN_DIAL_SQL,
            [call_id for call_id, _, _ in ordered],
            [at for _, at, _ in ordered],
            self.instance_id,
            self.default_timezone,
            [again for _, _, again in ordered],
        )
        opened = {row["id"] for row in passed}
        return [call_id in opened for call_id, _, _ in items]

    @translate_errors
    async def release_claim(self, call_id: uuid.UUID) -> None:
        """A claimed call that was not dialed goes back: to scheduled (paused,
        outside hours, shutting down), or cancelled when its campaign is over."""
        await hand_back(self.pool, call_id)


_RELEASE: Final = """
    UPDATE calls k
    SET status = CASE WHEN c.status IN ('cancelled', 'completed') THEN 'cancelled'
                      ELSE 'scheduled' END::call_status,
        outcome = CASE WHEN c.status IN ('cancelled', 'completed') THEN 'campaign-' || c.status END,
        claimed_by = NULL, claimed_at = NULL, dialed_at = NULL
    FROM campaigns c
    WHERE k.id = $1 AND k.status = 'pending' AND k.call_sid IS NULL AND c.id = k.campaign_id
    RETURNING k.status, k.campaign_id, k.contact_id
"""
_CANCEL_CONTACT: Final = """
    UPDATE campaign_contacts SET call_status = 'cancelled'
    WHERE campaign_id = $1 AND contact_id = $2 AND call_status IN ('pending', 'scheduled')
"""


async def hand_back(pool: asyncpg.Pool, call_id: uuid.UUID) -> None:
    """Hand a never-sent claim back (ClaimStore.release_claim; rescue uses it too)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_RELEASE, call_id)
        if row is not None and row["status"] == CallStatus.CANCELLED:
            await conn.execute(_CANCEL_CONTACT, row["campaign_id"], row["contact_id"])
