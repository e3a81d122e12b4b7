"""The operator console over real HTTP on loopback, against a real database: access
rules (sign-in, roles, CSRF, origin, host), actions through the CLI's steering, CSV
upload through the importer, filters in POST bodies."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid

import aiohttp
import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from dialer.console.passwords import hash_password
from dialer.operator.results import export_campaign
from tests.console_helpers import (
    READ_ONLY_TOKEN,
    TOKEN,
    client,
    console_daemon,
    console_only,
    csrf_of,
    make_campaign,
    sign_in,
)
from tests.harness import wait_for


async def _status(conn: asyncpg.Connection, cid: uuid.UUID) -> str:
    return str(await conn.fetchval("SELECT status FROM campaigns WHERE id = $1", cid))


async def test_open_console_shows_the_board_with_operator_data_escaped(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """On loopback with no secret the board opens without sign-in; names are escaped."""
    cid = await make_campaign(conn, 4, name="<script>alert(1)</script> & Co")
    async with console_only(pool) as console, client() as http, http.get(f"{console.url}/") as r:
        body = await r.text()
    assert r.status == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in body
    assert "<script>alert(1)" not in body
    assert f'href="/campaigns/{cid}"' in body
    assert "draft: not started" in body
    assert "Content-Security-Policy" in r.headers


async def test_signed_out_requests_are_refused(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """With a token configured, a visitor without a session sees only the sign-in page:
    pages redirect there, live streams get 401, actions 403 — and nothing changes."""
    cid = await make_campaign(conn)
    async with console_only(pool, token=TOKEN) as console, client() as http:
        async with http.get(f"{console.url}/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
        async with http.get(f"{console.url}/campaigns/{cid}", allow_redirects=False) as r:
            assert r.status == 303
        async with http.get(f"{console.url}/events/board") as r:
            assert r.status == 401
        async with http.get(f"{console.url}/events/campaigns/{cid}") as r:
            assert r.status == 401
        async with http.get(f"{console.url}/login") as r:
            token = csrf_of(await r.text())
        async with http.post(f"{console.url}/campaigns/{cid}/actions/start", data={"csrf_token": token}) as r:
            assert r.status == 403
    assert await _status(conn, cid) == "draft"


async def test_sign_in_sets_a_strict_httponly_cookie_and_wrong_secrets_fail(pool: asyncpg.Pool) -> None:
    """The right token gives a session cookie (HttpOnly, SameSite=Strict); a wrong one a 403."""
    async with console_only(pool, token=TOKEN) as console, client() as http:
        wrong = await sign_in(http, console.url, "not-the-token-at-all")
        assert wrong.status == 403
        async with http.get(f"{console.url}/", allow_redirects=False) as r:
            assert r.status == 303
        right = await sign_in(http, console.url, TOKEN)
        assert right.status == 200  # followed the redirect to the board
        cookie = right.history[0].headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with http.get(f"{console.url}/") as r:
            assert r.status == 200 and "signed in: operator" in await r.text()


async def test_missing_or_wrong_csrf_token_is_refused(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """A signed-in operator's POST without the page's CSRF token (or with another) changes nothing."""
    cid = await make_campaign(conn)
    async with console_only(pool, token=TOKEN) as console, client() as http:
        await sign_in(http, console.url, TOKEN)
        action = f"{console.url}/campaigns/{cid}/actions/start"
        async with http.post(action, data={}) as r:
            assert r.status == 403 and "CSRF" in await r.text()
        async with http.post(action, data={"csrf_token": "forged"}) as r:
            assert r.status == 403
        assert await _status(conn, cid) == "draft"
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        async with http.post(action, data={"csrf_token": token}) as r:
            assert r.status == 200 and "The campaign is now active." in await r.text()
    assert await _status(conn, cid) == "active"


async def test_read_only_session_sees_everything_and_changes_nothing(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """The read-only token shows pages and filters but no actions; an action POST is 403."""
    cid = await make_campaign(conn)
    async with console_only(pool, token=TOKEN, read_only_token=READ_ONLY_TOKEN) as console, client() as http:
        await sign_in(http, console.url, READ_ONLY_TOKEN)
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            page = await r.text()
        assert r.status == 200 and "Read-only session" in page and "/actions/start" not in page
        token = csrf_of(page)
        async with http.post(f"{console.url}/campaigns/{cid}/contacts", data={"csrf_token": token}) as r:
            assert r.status == 200
        async with http.post(f"{console.url}/campaigns/{cid}/actions/start", data={"csrf_token": token}) as r:
            assert r.status == 403 and "read-only" in await r.text()
    assert await _status(conn, cid) == "draft"


async def test_operator_password_hash_signs_in(pool: asyncpg.Pool) -> None:
    """console.password_hash accepts its password (and only it) as an operator sign-in."""
    async with console_only(pool, password_hash=hash_password("correct horse")) as console, client() as http:
        assert (await sign_in(http, console.url, "wrong horse")).status == 403
        assert (await sign_in(http, console.url, "correct horse")).status == 200
        async with http.get(f"{console.url}/") as r:
            assert "signed in: operator" in await r.text()


async def test_repeated_failed_sign_ins_are_throttled(pool: asyncpg.Pool) -> None:
    """After 10 wrong secrets in a minute the client gets 429, even with the right one."""
    async with console_only(pool, token=TOKEN) as console, client() as http:
        for _ in range(10):
            assert (await sign_in(http, console.url, "guess-guess-guess-guess")).status == 403
        assert (await sign_in(http, console.url, TOKEN)).status == 429


async def test_foreign_origin_and_foreign_host_are_refused(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """A POST from another site's page is refused by its Origin; an open console answers
    only to loopback host names (a rebinding attacker's name gets 421)."""
    cid = await make_campaign(conn)
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        async with http.post(
            f"{console.url}/campaigns/{cid}/actions/start",
            data={"csrf_token": token},
            headers={"Origin": "https://evil.example"},
        ) as r:
            assert r.status == 403
        async with http.get(f"{console.url}/", headers={"Host": "evil.example"}) as r:
            assert r.status == 421
    assert await _status(conn, cid) == "draft"


async def test_an_illegal_action_shows_the_reason(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Pausing a draft is refused with the database's words (the CLI's too), and nothing changes."""
    cid = await make_campaign(conn)
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        async with http.post(f"{console.url}/campaigns/{cid}/actions/pause", data={"csrf_token": token}) as r:
            body = await r.text()
    assert r.status == 409
    assert f"campaign {cid}: status cannot change from draft to paused" in body
    assert await _status(conn, cid) == "draft"


async def test_cancel_asks_for_confirmation(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Cancel without the confirmation box changes nothing; with it, the campaign is cancelled."""
    cid = await make_campaign(conn)
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        cancel = f"{console.url}/campaigns/{cid}/actions/cancel"
        async with http.post(cancel, data={"csrf_token": token}) as r:
            assert r.status == 400
        assert await _status(conn, cid) == "draft"
        async with http.post(cancel, data={"csrf_token": token, "confirm": "yes"}) as r:
            assert r.status == 200
    assert await _status(conn, cid) == "cancelled"


def _upload_form(token: str, content: bytes, region: str = "") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("csrf_token", token)
    form.add_field("default_region", region)
    form.add_field("file", content, filename="patients.csv", content_type="text/csv")
    return form


async def test_csv_upload_imports_through_the_importer_and_reports_rejected_lines(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """An uploaded CSV is imported into the campaign; the page lists the rejected lines."""
    cid = await make_campaign(conn, 0)
    csv = (
        "first_name,last_name,phone_number,appointment\n"
        "Lucía,Pérez,612 345 678,Mon 10:00\n"
        "Bad,Number,12345,Tue\n"
        "Luis,Gómez,+34 699 000 111,Wed\n"
        "LUCÍA,Pérez,612345678,Thu\n"  # the same contact again: same number and name
    ).encode()
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        async with http.post(f"{console.url}/campaigns/{cid}/upload", data=_upload_form(token, csv, "es")) as r:
            body = await r.text()
    assert r.status == 200, body
    assert "imported 2 new, 0 existing, 2 rejected; 2 linked into the campaign" in body
    assert "line 3:" in body and "line 5: duplicate phone number and name (same as line 2)" in body
    linked = await conn.fetch(
        "SELECT ct.phone_number, ct.custom_fields->>'appointment' AS appointment FROM campaign_contacts cc "
        "JOIN contacts ct ON ct.id = cc.contact_id WHERE cc.campaign_id = $1 ORDER BY 1",
        cid,
    )
    assert [(r["phone_number"], r["appointment"]) for r in linked] == [
        ("+34612345678", "Mon 10:00"),
        ("+34699000111", "Wed"),
    ]


async def test_a_second_upload_reports_the_fields_it_updated(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Next week's file into the same campaign: the page says how many contacts already
    in it had their fields in this campaign changed, as the CLI does."""
    cid = await make_campaign(conn, 0)
    first = b"first_name,phone_number,Cita\nLucia,612 345 678,lunes 10:00\nLuis,699 000 111,martes\n"
    second = b"first_name,phone_number,Cita\nLucia,612 345 678,jueves 12:00\nLuis,699 000 111,martes\n"
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        upload = f"{console.url}/campaigns/{cid}/upload"
        async with http.post(upload, data=_upload_form(token, first, "es")) as r:
            assert "updated the fields" not in await r.text()
        async with http.post(upload, data=_upload_form(token, second, "es")) as r:
            body = await r.text()
    assert r.status == 200, body
    summary = next(line for line in body.splitlines() if "imported" in line)
    expected = "imported 0 new, 2 existing, 0 rejected; 0 linked into the campaign; updated the fields of 1 already in it"
    assert expected in summary, summary
    assert await conn.fetchval(
        "SELECT cc.fields->>'cita' FROM campaign_contacts cc JOIN contacts ct ON ct.id = cc.contact_id"
        " WHERE cc.campaign_id = $1 AND ct.phone_number = '+34612345678'",
        cid,
    ) == "jueves 12:00"


async def test_upload_is_refused_when_too_large_or_the_campaign_is_final(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """A file over max_upload_bytes gets 413; an upload into a cancelled campaign is
    refused with the CLI's reason; neither imports anything."""
    cid = await make_campaign(conn, 0)
    big = b"phone_number\n" + b"+34612345678\n" * 200
    async with console_only(pool, max_upload_bytes=1024) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        async with http.post(f"{console.url}/campaigns/{cid}/upload", data=_upload_form(token, big)) as r:
            assert r.status == 413 and "larger than 1,024 bytes" in await r.text()
        await conn.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = $1", cid)
        small = b"phone_number\n+34612345678\n"
        async with http.post(f"{console.url}/campaigns/{cid}/upload", data=_upload_form(token, small)) as r:
            assert r.status == 400 and "it takes no more contacts" in await r.text()
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_multipart_without_the_csrf_token_first_is_refused(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """An upload whose first part is not the CSRF token is refused before the file is read."""
    cid = await make_campaign(conn, 0)
    form = aiohttp.FormData()
    form.add_field("file", b"phone_number\n+34612345678\n", filename="x.csv")
    async with console_only(pool) as console, client() as http:
        await http.get(f"{console.url}/")
        async with http.post(f"{console.url}/campaigns/{cid}/upload", data=form) as r:
            assert r.status == 403
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_contact_filter_travels_in_the_body_and_filters(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """Searching by name is a POST (the URL carries the campaign id only) and returns the match."""
    cid = await make_campaign(conn, 12)
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        url = f"{console.url}/campaigns/{cid}/contacts"
        async with http.post(url, data={"csrf_token": token, "search": "garcía 11"}) as r:
            body = await r.text()
    assert r.status == 200 and r.url.query_string == ""
    assert "Ana García 11" in body and "Ana García 12" not in body and "Ana García 3<" not in body


async def test_unknown_or_malformed_campaign_ids_are_404(pool: asyncpg.Pool) -> None:
    """A campaign page for an id that does not exist, or is not a UUID, is a 404."""
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{uuid.uuid4()}") as r:
            assert r.status == 404
        async with http.get(f"{console.url}/campaigns/not-a-uuid") as r:
            assert r.status == 404


async def test_live_client_cap_answers_503(pool: asyncpg.Pool) -> None:
    """Beyond console.max_live_clients open streams a new one is refused with 503."""
    async with console_only(pool, max_live_clients=1) as console, client() as http:
        first = await http.get(f"{console.url}/events/board")
        try:
            assert first.status == 200
            async with http.get(f"{console.url}/events/board") as second:
                assert second.status == 503
        finally:
            first.close()


@pytest.mark.parametrize("path", ["/", "/instances"])
async def test_pages_render_with_no_campaigns_and_no_instances(pool: asyncpg.Pool, path: str) -> None:
    """An empty database renders the board and the instances page, saying so."""
    async with console_only(pool) as console, client() as http, http.get(f"{console.url}{path}") as r:
        body = await r.text()
    assert r.status == 200
    assert "No campaigns yet" in body or "No instance has registered" in body


async def test_stopping_the_console_ends_open_live_streams(pool: asyncpg.Pool) -> None:
    """Leaving `serve` closes open event streams at once instead of waiting on them."""
    async with client() as http:
        async with console_only(pool) as console:
            stream = await http.get(f"{console.url}/events/board")
            assert stream.status == 200
        async with asyncio.timeout(5):
            rest = await stream.read()
    assert rest is not None


async def test_a_large_upload_streams_to_the_importer(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """A file larger than the form limit (read whole by the HTTP guard below it) is
    streamed part by part under the process's guard, and every row is imported."""
    cid = await make_campaign(conn, 0)
    rows = "".join(f"+3461{i:07d},Row {i}\n" for i in range(12_000))
    content = f"phone_number,first_name\n{rows}".encode()
    assert len(content) > 256 * 1024
    async with console_only(pool) as console, client() as http:
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            token = csrf_of(await r.text())
        async with http.post(f"{console.url}/campaigns/{cid}/upload", data=_upload_form(token, content)) as r:
            body = await r.text()
    assert r.status == 200, body[:500]
    assert "imported 12000 new, 0 existing, 0 rejected" in body
    assert await conn.fetchval("SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1", cid) == 12_000


async def test_the_export_download_is_the_clis_file_and_the_history_is_shown(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """Results download as exactly the bytes `dialer campaign export` writes (plain and
    --excel), one row per contact, also for a read-only session; the campaign page
    lists its status history."""
    cid = await make_campaign(conn, 7, name="Export me")
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
    await conn.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", cid)
    expected: dict[bool, bytes] = {}
    for excel in (False, True):
        out = io.StringIO(newline="")
        assert await export_campaign(conn, cid, out, excel=excel, default_timezone="UTC") == 7
        expected[excel] = out.getvalue().encode()
    async with console_only(pool, read_only_token=READ_ONLY_TOKEN, token=TOKEN) as console, client() as http:
        await sign_in(http, console.url, READ_ONLY_TOKEN)
        async with http.get(f"{console.url}/campaigns/{cid}/export.csv") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/csv; charset=utf-8"
            assert r.headers["Content-Disposition"] == f'attachment; filename="campaign-{cid}.csv"'
            plain = await r.read()
        async with http.get(f"{console.url}/campaigns/{cid}/export.csv?excel=1") as r:
            excel_file = await r.read()
        async with http.get(f"{console.url}/campaigns/{uuid.uuid4()}/export.csv") as r:
            assert r.status == 404
        async with http.get(f"{console.url}/campaigns/{cid}") as r:
            page = await r.text()
    assert plain == expected[False] and excel_file == expected[True]
    rows = list(csv.reader(io.StringIO(plain.decode())))
    assert len(rows) == 1 + 7 and "contact_id" in rows[0]
    assert excel_file.startswith("\ufeff".encode())
    assert "created draft" in page and "draft → active" in page and "active → paused" in page


async def test_the_instances_page_shows_each_instances_rate_share(db_url: str, sim: RunningSimulator) -> None:
    """A running daemon's row shows the rate share its heartbeat wrote (alone: the whole
    account rate) beside its configured rate."""
    async with console_daemon(db_url, sim.url, calls_per_second=7) as daemon, client() as http:
        assert daemon.console is not None
        url = f"{daemon.console.url}/instances"

        async def shows_share() -> bool:
            async with http.get(url) as r:
                body = await r.text()
            row = body[body.index(f'id="instance-{daemon.instance_id}"'):]
            row = row[: row.index("</tr>")]
            return "7.0/s" in row and "of 7.0/s" in row

        await wait_for(shows_share, 10, "the instance's rate share on the page")
