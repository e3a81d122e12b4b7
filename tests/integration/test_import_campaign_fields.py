"""An import into a campaign writes the file's extra columns into campaign_contacts.fields,
and next week's file replaces them without touching the contact: the next call speaks
the new appointment (docs/operations.md#contact-import) — through the real CLI, the
daemon's claim and its TwiML lookup, on a real database."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from dialer.store.lifecycle import LifecycleStore
from dialer.twiml import render_twiml, validate_template
from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture
from tests.factories import FakeClock, make_campaign

NOON = datetime(2026, 11, 25, 12, 0)
SCRIPT = "Hola {{first_name}}, su cita es el {{custom.Cita}}."
HEADER = "Nombre;Apellidos;Teléfono;Email;Cita\r\n"
THIS_WEEK = (
    HEADER
    + "Ana;García Núñez;612 345 678;ana@example.es;lunes 9 de marzo, 10:00\r\n"
    + "Begoña;Peña;622 000 111;bego@example.es;miércoles 11 de marzo, 9:15\r\n"
)
NEXT_WEEK = (
    HEADER
    + "Ana;García Núñez;612 345 678;ana@example.es;lunes 16 de marzo, 11:30\r\n"
    + "Begoña;Peña;622 000 111;bego@example.es;miércoles 11 de marzo, 9:15\r\n"
)


async def _fields(conn: asyncpg.Connection, cid: uuid.UUID) -> dict[str, object]:
    rows = await conn.fetch(
        "SELECT ct.first_name, cc.fields FROM campaign_contacts cc JOIN contacts ct ON ct.id = cc.contact_id "
        "WHERE cc.campaign_id = $1",
        cid,
    )
    return {r["first_name"]: r["fields"] for r in rows}


async def test_reimport_updates_the_appointment_the_next_call_speaks(
    cli: Cli, conn: asyncpg.Connection, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Next week's Latin-1 clinic file, imported into the campaign, replaces the
    appointment in campaign_contacts.fields (the contact's own custom_fields stay),
    and the TwiML the daemon serves for the next call says the new date."""
    cid = await make_campaign(conn, status="active", script_template=SCRIPT)
    path = tmp_path / "pacientes.csv"
    path.write_bytes(THIS_WEEK.encode("latin-1"))
    code, out, err = await cli("contacts", "import", str(path), "--campaign", str(cid), "--default-region", "ES")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == f"linked 2 contacts into campaign {cid}"
    assert await _fields(conn, cid) == {
        "Ana": {"cita": "lunes 9 de marzo, 10:00"},
        "Begoña": {"cita": "miércoles 11 de marzo, 9:15"},
    }

    path.write_bytes(NEXT_WEEK.encode("latin-1"))
    code, out, err = await cli("contacts", "import", str(path), "--campaign", str(cid), "--default-region", "ES")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "imported 0 new, 2 existing, 0 rejected (see above)",
        f"linked 0 contacts into campaign {cid}",
        "updated the fields of 1 contacts already in it",  # Begoña's appointment did not change
    ]
    assert (await _fields(conn, cid))["Ana"] == {"cita": "lunes 16 de marzo, 11:30"}
    # The contact itself is untouched: its custom_fields are still the first file's.
    assert await conn.fetchval("SELECT custom_fields FROM contacts WHERE first_name = 'Ana'") == {
        "cita": "lunes 9 de marzo, 10:00"
    }

    store = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=validate_template, clock=FakeClock(NOON))
    await store.register_instance()
    assert await store.housekeep()
    [campaign] = await store.dialable_campaigns()
    spoken = {}
    for call in await store.claim(campaign, 10):
        found = await store.call_for_twiml(call.id)
        assert found is not None
        doc = render_twiml(found.script_template, found.contact, voice="Polly.Lucia", language="es-ES")
        spoken[found.contact.first_name] = doc
    assert "Hola Ana, su cita es el lunes 16 de marzo, 11:30." in spoken["Ana"]
    assert "miércoles 11 de marzo, 9:15" in spoken["Begoña"]

    code, out, _ = await cli("campaign", "preview", str(cid), "--contacts", "2")
    assert code == 0 and "Hola Ana, su cita es el lunes 16 de marzo, 11:30." in out


@pytest.mark.parametrize("with_campaign", [False, True], ids=["contacts-only", "into-campaign"])
async def test_an_import_without_a_campaign_writes_no_campaign_fields(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path, with_campaign: bool
) -> None:
    """Fields belong to a campaign link: an import without --campaign links nothing,
    one with it writes each row's extra columns on that row's own link."""
    cid = await make_campaign(conn, script_template=SCRIPT)
    path = tmp_path / "p.csv"
    path.write_bytes(THIS_WEEK.encode("utf-8-sig"))
    extra = ["--campaign", str(cid)] if with_campaign else []
    code, _, _ = await cli("contacts", "import", str(path), "--default-region", "ES", *extra)
    assert code == 0
    expected = {"Ana": {"cita": "lunes 9 de marzo, 10:00"}, "Begoña": {"cita": "miércoles 11 de marzo, 9:15"}}
    assert await _fields(conn, cid) == (expected if with_campaign else {})
