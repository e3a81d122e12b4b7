"""The operator's campaign store speaks the models' vocabulary: typed rows and
CampaignStatus values, never bare dicts or re-spelled strings."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from dialer.models import Campaign, CampaignStatus
from dialer.store.campaigns import (
    CampaignStore,
    CampaignSummary,
    NewCampaign,
    StatusChange,
    TransitionRefused,
)
from tests.factories import add_contacts, madrid_number


async def test_get_and_list_return_typed_campaigns(conn: asyncpg.Connection) -> None:
    """get() is a models.Campaign, list_all() CampaignSummary rows with their contact
    count, both with CampaignStatus; an unknown id is None."""
    store = CampaignStore(conn)
    cid = await store.create(NewCampaign(name="typed", max_retries=1, caller_id="+34910000000"))
    await add_contacts(conn, cid, [madrid_number(1), madrid_number(2)])
    campaign = await store.get(cid)
    assert isinstance(campaign, Campaign)
    assert (campaign.name, campaign.status, campaign.max_retries) == ("typed", CampaignStatus.DRAFT, 1)
    assert campaign.status is CampaignStatus.DRAFT
    [summary] = await store.list_all()
    assert isinstance(summary, CampaignSummary)
    assert (summary.id, summary.status, summary.contacts, summary.total_calls) == (
        cid,
        CampaignStatus.DRAFT,
        2,
        0,
    )
    assert await store.get(uuid.UUID(int=0)) is None


async def test_set_status_answers_statuses_and_reports_the_refusal(conn: asyncpg.Connection) -> None:
    """set_status answers the status before and after as CampaignStatus (equal for a
    no-op), None for an unknown id, and TransitionRefused with the database's words."""
    store = CampaignStore(conn)
    cid = await store.create(NewCampaign(name="steered"))
    done = await store.set_status(cid, CampaignStatus.ACTIVE)
    assert done == StatusChange(before=CampaignStatus.DRAFT, after=CampaignStatus.ACTIVE) and done.changed
    again = await store.set_status(cid, CampaignStatus.ACTIVE)
    assert again is not None and not again.changed and again.before is CampaignStatus.ACTIVE
    assert await store.set_status(uuid.UUID(int=0), CampaignStatus.ACTIVE) is None
    await store.set_status(cid, CampaignStatus.COMPLETED)
    with pytest.raises(TransitionRefused, match="status cannot change from completed to active"):
        await store.set_status(cid, CampaignStatus.ACTIVE)
    await store.set_status(cid, CampaignStatus.COMPLETED)
    assert [(h.from_status, h.to_status) for h in await store.history(cid)] == [
        (None, CampaignStatus.DRAFT),
        (CampaignStatus.DRAFT, CampaignStatus.ACTIVE),
        (CampaignStatus.ACTIVE, CampaignStatus.COMPLETED),
    ]
    progress = await store.progress(cid)
    assert progress is not None and progress.status is CampaignStatus.COMPLETED
