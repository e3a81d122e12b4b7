"""The console shows keypad answers (docs/campaigns.md#menus, docs/console.md): the
board's responses so far per campaign and the campaign page's responses chart, over
real HTTP against a real database."""

from __future__ import annotations

import json
import uuid

import asyncpg

from tests.console_helpers import client, console_only, make_campaign


async def _answer(conn: asyncpg.Connection, cid: uuid.UUID, responses: list[str]) -> None:
    """Give the campaign's first contacts these responses, as key presses leave them."""
    contacts = await conn.fetch(
        "SELECT contact_id FROM campaign_contacts WHERE campaign_id = $1 ORDER BY contact_id", cid
    )
    for row, response in zip(contacts, responses, strict=False):
        await conn.execute(
            "UPDATE campaign_contacts SET response = $3, responded_at = timezone('utc', now()) "
            "WHERE campaign_id = $1 AND contact_id = $2",
            cid, row["contact_id"], response,
        )


async def test_board_and_campaign_page_show_the_responses_so_far(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """Board: 'confirmed 2, opted out 1' beside the menu campaign, a dash beside the
    one-way one; the menu campaign's page draws a responses chart whose description
    lists the counts (outcomes first, then reserved responses); the one-way page has none."""
    menu_campaign = await make_campaign(conn, 4, name="Citas")
    menu = {"1": {"outcome": "confirmed"}, "9": {"action": "opt_out"}}
    await conn.execute("UPDATE campaigns SET menu = $2::jsonb WHERE id = $1", menu_campaign, json.dumps(menu))
    await _answer(conn, menu_campaign, ["opted_out", "confirmed", "confirmed"])
    one_way = await make_campaign(conn, 2, name="Aviso")
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/") as r:
            board = await r.text()
        async with http.get(f"{console.url}/campaigns/{menu_campaign}") as r:
            page = await r.text()
        async with http.get(f"{console.url}/campaigns/{one_way}") as r:
            plain = await r.text()
    assert "Responses so far" in board
    menu_row = board.split(f'id="campaign-{menu_campaign}"')[1].split("</tr>")[0]
    assert '<td class="responses">confirmed 2, opted out 1</td>' in menu_row
    plain_row = board.split(f'id="campaign-{one_way}"')[1].split("</tr>")[0]
    assert '<td class="responses">—</td>' in plain_row
    assert '<desc id="responses-d">confirmed 2, opted_out 1</desc>' in page
    assert 'class="bar bar-opted-out"' in page
    assert "responses-d" not in plain and "Contacts by response" not in plain


async def test_a_menu_campaign_without_answers_yet_says_so(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """A menu campaign nobody has answered yet shows the chart's empty state, not nothing."""
    cid = await make_campaign(conn, 2)
    await conn.execute("""UPDATE campaigns SET menu = '{"1": {"outcome": "ok"}}' WHERE id = $1""", cid)
    async with console_only(pool) as console, client() as http, http.get(f"{console.url}/campaigns/{cid}") as r:
        page = await r.text()
    assert "Contacts by response: nothing yet." in page
