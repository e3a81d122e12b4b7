"""docs/invariants.md#7: a campaign's status changes only along the allowed
transitions, whoever writes it — tried as plain SQL from a role that is not the
daemon's (an operator in psql or the dashboard), every pair of statuses."""

from __future__ import annotations

import itertools
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from dialer.models import CampaignStatus
from dialer.operator.common import TRANSITIONS

STATUSES = [s.value for s in CampaignStatus]
ALLOWED = {
    ("draft", "active"),
    ("draft", "cancelled"),
    ("active", "paused"),
    ("active", "cancelled"),
    ("active", "completed"),
    ("paused", "active"),
    ("paused", "cancelled"),
    ("paused", "completed"),
}
CHANGES = [(a, b) for a, b in itertools.product(STATUSES, STATUSES) if a != b]


@dataclass
class Operator:
    """A connection as another role, named like psql, and the owner's connection."""

    role: str
    sql: asyncpg.Connection
    owner: asyncpg.Connection


@pytest.fixture
async def operator(db_url: str, conn: asyncpg.Connection) -> AsyncIterator[Operator]:
    """A login role that is not the daemon's: it may read and write campaigns (and
    bypass row-level security, as the dashboard's role does) but has no right at all
    on the history table."""
    role = f"operator_{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(12)
    await conn.execute(f"CREATE ROLE {role} LOGIN BYPASSRLS PASSWORD '{password}'")
    await conn.execute(f"GRANT SELECT, INSERT, UPDATE ON campaigns TO {role}")
    parts = urlsplit(db_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    url = urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))
    sql = await asyncpg.connect(url, server_settings={"application_name": "psql"})
    try:
        yield Operator(role=role, sql=sql, owner=conn)
    finally:
        await sql.close()
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")


async def _campaign(owner: asyncpg.Connection, status: str) -> uuid.UUID:
    cid: uuid.UUID = await owner.fetchval(
        "INSERT INTO campaigns (name, status) VALUES ('t', $1::campaign_status) RETURNING id", status
    )
    return cid


async def _history(owner: asyncpg.Connection, cid: uuid.UUID) -> list[tuple[str | None, str, str]]:
    rows = await owner.fetch(
        "SELECT from_status::text, to_status::text, changed_by FROM campaign_status_history "
        "WHERE campaign_id = $1 ORDER BY id",
        cid,
    )
    return [(r["from_status"], r["to_status"], r["changed_by"]) for r in rows]


async def test_every_pair_of_statuses_is_allowed_or_refused_by_the_rule(operator: Operator) -> None:
    """Each of the 20 changes between two different statuses, written as plain SQL by
    another role: the 8 allowed ones change the status and add one history row naming
    that role and its program; the 12 others fail with an error naming both statuses
    and change nothing."""
    for before, after in CHANGES:
        cid = await _campaign(operator.owner, before)
        original = await operator.owner.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid)
        assert original is not None
        row = dict(original)
        update = f"UPDATE campaigns SET status = '{after}' WHERE id = '{cid}'"
        if (before, after) in ALLOWED:
            assert await operator.sql.execute(update) == "UPDATE 1", (before, after)
            assert await operator.owner.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid) == after
            assert (await _history(operator.owner, cid))[1:] == [(before, after, f"{operator.role} (psql)")]
            continue
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await operator.sql.execute(update)
        assert f"status cannot change from {before} to {after}" in refused.value.message, (before, after)
        assert refused.value.constraint_name == "campaigns_status_transition"
        unchanged = await operator.owner.fetchrow("SELECT * FROM campaigns WHERE id = $1", cid)
        assert unchanged is not None and dict(unchanged) == row
        assert len(await _history(operator.owner, cid)) == 1, (before, after)


@pytest.mark.parametrize("status", STATUSES)
async def test_setting_the_same_status_is_a_no_op(operator: Operator, status: str) -> None:
    """Setting the status a campaign already has (final ones included) succeeds,
    writes no history row and raises nothing."""
    cid = await _campaign(operator.owner, status)
    created = await _history(operator.owner, cid)
    assert await operator.sql.execute(f"UPDATE campaigns SET status = '{status}' WHERE id = '{cid}'") == "UPDATE 1"
    assert await _history(operator.owner, cid) == created
    assert [h[:2] for h in created] == [(None, status)]


async def test_a_refused_change_fails_the_whole_statement(operator: Operator) -> None:
    """One UPDATE over several campaigns with one refused change changes none of them:
    the cancelled campaign is not revived, and the draft beside it stays draft."""
    cancelled = await _campaign(operator.owner, "cancelled")
    draft = await _campaign(operator.owner, "draft")
    with pytest.raises(asyncpg.CheckViolationError, match="from cancelled to active"):
        await operator.sql.execute(
            "UPDATE campaigns SET status = 'active' WHERE id = ANY($1::uuid[])", [cancelled, draft]
        )
    statuses = await operator.owner.fetch(
        "SELECT id, status::text FROM campaigns WHERE id = ANY($1::uuid[])", [cancelled, draft]
    )
    assert {r["id"]: r["status"] for r in statuses} == {cancelled: "cancelled", draft: "draft"}


async def test_creation_is_recorded_with_its_writer(operator: Operator) -> None:
    """A campaign inserted by another role starts its history with a row from NULL to
    its first status, naming that role and program."""
    cid = await operator.sql.fetchval("INSERT INTO campaigns (name, status) VALUES ('x', 'active') RETURNING id")
    assert await _history(operator.owner, cid) == [(None, "active", f"{operator.role} (psql)")]


async def test_history_cannot_be_written_or_read_by_the_other_role(operator: Operator) -> None:
    """The other role, which has no right on the history table, cannot forge or read
    it; only the trigger writes it."""
    cid = await _campaign(operator.owner, "draft")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await operator.sql.execute(
            "INSERT INTO campaign_status_history (campaign_id, to_status, changed_by) VALUES ($1, 'active', 'me')",
            cid,
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await operator.sql.fetch("SELECT * FROM campaign_status_history")


async def test_set_role_is_named_as_the_writer(operator: Operator) -> None:
    """A session that SET ROLEs to another role is recorded as that role (the rights
    it wrote with), not as the user it logged in as."""
    await operator.owner.execute(f"GRANT {operator.role} TO current_user")
    cid = await _campaign(operator.owner, "draft")
    async with operator.owner.transaction():
        await operator.owner.execute(f"SET LOCAL ROLE {operator.role}")
        await operator.owner.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
    assert (await _history(operator.owner, cid))[-1] == ("draft", "active", f"{operator.role} (dialer)")


def test_the_steering_commands_offer_only_allowed_changes() -> None:
    """Every (status, command) pair a screen offers is one the database allows: the
    presentation table cannot drift from the rule."""
    for command, (offered_from, target) in TRANSITIONS.items():
        for before in offered_from:
            assert (before.value, target.value) in ALLOWED, (command, before)
