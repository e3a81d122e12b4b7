"""Data fuzzing: contact names, custom fields and scripts full of SQL, TwiML/XML,
unicode (emoji, RTL, combining marks, control characters) and 10 kB strings
round-trip unchanged through the database and never break a call: every call
completes, and the TwiML the carrier received parses to exactly one <Say> whose text
is the rendered script."""

from __future__ import annotations

import random
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import asyncpg
import pytest

from dialer import twiml
from dialer.carrier.simulator import RunningSimulator
from dialer.models import Contact
from dialer.service import Daemon
from tests.factories import madrid_number, make_campaign
from tests.harness import daemon_settings, wait_for

pytestmark = pytest.mark.slow

CONTACTS = 60
FRAGMENTS = [
    "'; DROP TABLE calls; --", "\" OR 1=1 --", "$1", "%s", "\\x00", "E'\\\\'", "$$ $tag$",
    "</Say><Dial>+15550000</Dial><Say>", "<![CDATA[x]]>", "]]>", "&amp;", "&lt;", "<?xml?>", "<Play>http://x</Play>",
    "{{first_name}}", "{{", "}}", "{x}", "😀", "👩‍👩‍👧", "🇪🇸", "\u202eRTL\u202c", "مرحبا", "שלום", "e\u0301",
    "\u200b", "\ufeff", "\x01", "\x1f", "\x7f", "\t", "\r\n", "\u2028", "ß", "İ", "ǅ", "𝔘𝔫𝔦", "\U0010fffd",
]
TEMPLATE = (
    "Hola {{first_name}} {{last_name}} <Play>http://evil</Play> '; DROP TABLE contacts; -- "
    "{{custom.note}} / {{custom.code}} / {{ email }} / {{custom.missing}} 😀 \u202eend"
)


def _hostile(rng: random.Random, max_len: int) -> str:
    """A string of hostile fragments and random code points (no NUL, no surrogates)."""
    parts: list[str] = []
    while sum(len(p) for p in parts) < rng.randint(1, max_len):
        if rng.random() < 0.6:
            parts.append(rng.choice(FRAGMENTS))
        else:
            cp = rng.randint(1, 0x10FFFF)
            parts.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "x")
    return "".join(parts)[:max_len]


def _ten_kb(rng: random.Random) -> str:
    """Exactly 10,000 characters of hostile text."""
    seed = _hostile(rng, 500)
    return (seed * (10_000 // len(seed) + 1))[:10_000]


def _contacts(rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i in range(CONTACTS):
        big = i % 10 == 0  # every tenth contact carries 10 kB values
        custom: dict[str, Any] = {
            "note": _ten_kb(rng) if big else _hostile(rng, 200),
            "code": _hostile(rng, 50),
            _hostile(rng, 20): _hostile(rng, 40),  # a hostile key too
            "nested": {"a": [1, "<b>", None, 2.5, True]},
        }
        rows.append({
            "first_name": _hostile(rng, 100),
            "last_name": _hostile(rng, 100) if i % 7 else None,
            "email": _hostile(rng, 255),
            "custom_fields": custom,
            "phone_number": madrid_number(50_000 + i),
        })
    return rows


async def test_hostile_contact_data_round_trips_and_every_call_says_it(
    db_url: str, conn: asyncpg.Connection, sim: RunningSimulator
) -> None:
    """Hostile names, custom fields and a hostile script: stored unchanged, every call
    completed, and each call's TwiML (inline or fetched from the TwiML URL when over
    Twilio's inline limit) parses to one <Say> saying exactly the rendered script."""
    rng = random.Random(1234)
    rows = _contacts(rng)
    cid = await make_campaign(conn, status="draft", max_retries=0, script_template=TEMPLATE)
    ids: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        sim.simulator.script(row["phone_number"], ["answered"])
        contact_id = await conn.fetchval(
            "INSERT INTO contacts (first_name, last_name, email, custom_fields, phone_number) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id",
            row["first_name"], row["last_name"], row["email"], row["custom_fields"], row["phone_number"],
        )
        await conn.execute("INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $2)", cid, contact_id)
        ids[contact_id] = row
    daemon = Daemon(daemon_settings(db_url, sim.url), db_url=db_url)
    await daemon.start()
    try:
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)

        async def done() -> bool:
            return bool(await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid) == "completed")

        await wait_for(done, 60, "the hostile campaign to complete")
    finally:
        await daemon.stop(drain_seconds=2)
    stored = await conn.fetch(
        "SELECT id, first_name, last_name, email, custom_fields, phone_number FROM contacts"
    )
    assert len(stored) == CONTACTS
    for r in stored:
        assert {k: r[k] for k in rows[0]} == ids[r["id"]], "a value changed on its way through the database"
    assert await conn.fetchval("SELECT script_template FROM campaigns WHERE id = $1", cid) == TEMPLATE
    statuses = await conn.fetch("SELECT call_status FROM campaign_contacts WHERE campaign_id = $1", cid)
    assert {r["call_status"] for r in statuses} == {"completed"}
    by_number = {row["phone_number"]: row for row in rows}
    fetched = 0
    for call in sim.simulator.calls:
        row = by_number[call.to]
        if call.param("Url"):
            fetched += 1
        assert call.twiml, f"no TwiML reached the carrier for {call.to}"
        root = ET.fromstring(call.twiml)
        assert root.tag == "Response" and [child.tag for child in root] == ["Say"]
        contact = Contact(**{k: row[k] for k in ("first_name", "last_name", "phone_number", "email", "custom_fields")})
        expected = twiml.render_script(TEMPLATE, contact)
        # XML normalises a bare CR (and CRLF) to LF when parsing: compare that way.
        assert root[0].text == expected.replace("\r\n", "\n").replace("\r", "\n")
    print(f"\ndata fuzz: {len(sim.simulator.calls)} calls completed, {fetched} TwiML documents fetched by URL "
          f"(over the inline limit), {CONTACTS // 10} contacts with 10 kB fields")
    assert len(sim.simulator.calls) == CONTACTS
    assert fetched >= CONTACTS // 10
