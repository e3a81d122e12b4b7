"""The operator's campaign store speaks the models' vocabulary: typed rows and
CampaignStatus values, never bare dicts or re-spelled strings."""

from __future__ import annotations

import uuid

import asyncpg

from dialer.models import Campaign, CampaignStatus
from dialer.store.campaigns import CampaignStore, CampaignSummary, NewCampaign
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


async def test_transition_takes_and_answers_statuses(conn: asyncpg.Connection) -> None:
    """A transition from an allowed status changes it; from another it reports the
    status the campaign is in, as a CampaignStatus."""
    store = CampaignStore(conn)
    cid = await store.create(NewCampaign(name="steered"))
    done = await store.transition(cid, {CampaignStatus.DRAFT}, CampaignStatus.ACTIVE)
    assert (done.changed, done.status) == (True, CampaignStatus.ACTIVE)
    refused = await store.transition(cid, {CampaignStatus.PAUSED}, CampaignStatus.ACTIVE)
    assert (refused.changed, refused.status) == (False, CampaignStatus.ACTIVE)
    assert refused.status is CampaignStatus.ACTIVE
    progress = await store.progress(cid)
    assert progress is not None and progress.status is CampaignStatus.ACTIVE
