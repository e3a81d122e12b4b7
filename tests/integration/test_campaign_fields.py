"""campaign_contacts.fields: what a contact brings to one campaign (an appointment's
date) reaches the script through the claim and through the TwiML URL, before the
contact's own custom_fields, whatever the key's case (docs/campaigns.md#script-placeholders)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import pytest

from dialer.models import ClaimedCall
from dialer.store.lifecycle import LifecycleStore
from dialer.twiml import render_script, validate_template
from tests.factories import FakeClock, add_contacts, madrid_number, make_campaign

NOON = datetime(2026, 11, 25, 12, 0)
SCRIPT = "Hola {{first_name}}, su cita es el {{custom.Cita}} en {{ custom.CLINICA }}."


@pytest.fixture
async def store(pool: asyncpg.Pool) -> LifecycleStore:
    s = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=validate_template, clock=FakeClock(NOON))
    await s.register_instance()
    return s


async def _claim_one(store: LifecycleStore) -> ClaimedCall:
    assert await store.housekeep()
    [campaign] = await store.dialable_campaigns()
    [call] = await store.claim(campaign, 10)
    return call


async def test_the_claim_and_the_twiml_lookup_carry_the_campaign_fields(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """The claimed call's contact carries its fields in this campaign, and so does the
    lookup behind /twilio/twiml; the script reads them first ({{custom.Cita}} finds the
    key 'cita'), the contact's custom_fields after."""
    cid = await make_campaign(conn, status="active", script_template=SCRIPT)
    [contact] = await add_contacts(
        conn, cid, [madrid_number(1)], first_name="Ana",
        custom_fields={"cita": "old date", "clinica": "Centro"},
    )
    await conn.execute(
        "UPDATE campaign_contacts SET fields = $2::jsonb WHERE contact_id = $1",
        contact, {"CITA": "martes 3 a las 10:00"},
    )
    call = await _claim_one(store)
    assert call.contact.fields == {"CITA": "martes 3 a las 10:00"}
    expected = "Hola Ana, su cita es el martes 3 a las 10:00 en Centro."
    assert render_script(SCRIPT, call.contact) == expected
    found = await store.call_for_twiml(call.id)
    assert found is not None
    assert render_script(found.script_template, found.contact) == expected


async def test_the_same_contact_speaks_each_campaigns_own_fields(conn: asyncpg.Connection, store: LifecycleStore) -> None:
    """One contact in two campaigns: each campaign's call renders that campaign's fields."""
    first = await make_campaign(conn, status="active", script_template="Cita {{custom.cita}}")
    second = await make_campaign(conn, status="active", script_template="Cita {{custom.cita}}")
    [contact] = await add_contacts(conn, first, [madrid_number(2)])
    await conn.execute("INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $2)", second, contact)
    for campaign_id, date in ((first, "lunes"), (second, "viernes")):
        await conn.execute(
            "UPDATE campaign_contacts SET fields = $3::jsonb WHERE campaign_id = $1 AND contact_id = $2",
            campaign_id, contact, {"cita": date},
        )
    assert await store.housekeep()
    spoken = {}
    for campaign in await store.dialable_campaigns():
        for call in await store.claim(campaign, 10):
            found = await store.call_for_twiml(call.id)
            assert found is not None
            spoken[campaign.id] = render_script(found.script_template, found.contact)
            await store.release_claim(call.id)  # one live call per contact: let the other go
    assert spoken == {first: "Cita lunes", second: "Cita viernes"}


async def test_fields_default_to_an_empty_object_and_must_be_one(conn: asyncpg.Connection) -> None:
    """A campaign contact written without fields has {}; an array or null is refused."""
    cid = await make_campaign(conn)
    [contact] = await add_contacts(conn, cid, [madrid_number(3)])
    assert await conn.fetchval("SELECT fields FROM campaign_contacts WHERE contact_id = $1", contact) == {}
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE campaign_contacts SET fields = '[1]'::jsonb WHERE contact_id = $1", contact)
    with pytest.raises(asyncpg.NotNullViolationError):
        await conn.execute("UPDATE campaign_contacts SET fields = NULL WHERE contact_id = $1", contact)
