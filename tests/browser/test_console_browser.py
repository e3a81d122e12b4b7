"""The operator console in a real browser: Debian's chromium, headless, driven by
Playwright for Python (never a downloaded browser). The daemon, the simulator and
PostgreSQL are real. Screenshots of the board and of a campaign page are written to
$DIALER_TEST_ARTIFACTS (default: the test's temporary directory); docs/console.md
shows the committed copies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from dialer.carrier.simulator import RunningSimulator
from tests.console_helpers import console_daemon, console_only, make_campaign
from tests.harness import wait_for

CHROMIUM = Path(os.environ.get("DIALER_TEST_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    pytest.skip(
        f"console browser tests: no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )

from playwright.async_api import BrowserContext, Page, async_playwright  # noqa: E402

# Without the background-networking flags chromium's own connections are refused on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def chromium(javascript: bool = True) -> AsyncIterator[BrowserContext]:
    """A headless chromium with a fresh profile, closed and removed afterwards."""
    profile = tempfile.mkdtemp(prefix="dialer-chromium-")
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                java_script_enabled=javascript,
                viewport={"width": 1280, "height": 860},
            )
            context.set_default_timeout(20_000)
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: $DIALER_TEST_ARTIFACTS, else the test's temporary directory."""
    path = Path(os.environ.get("DIALER_TEST_ARTIFACTS") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _progress(page: Page, selector: str) -> int:
    return int(await page.eval_on_selector(selector, "el => el.value"))


async def test_board_and_campaign_page_update_live_without_a_reload(
    db_url: str, sim: RunningSimulator, conn: asyncpg.Connection, artifacts: Path
) -> None:
    """While a 300-contact campaign runs, the board's progress bar and counters change
    in place (the page is never reloaded); screenshots of the board and the campaign page."""
    cid = await make_campaign(conn, 300, name="Flu shot reminders")
    await make_campaign(conn, 40, name="Follow-up survey")
    async with console_daemon(db_url, sim.url, calls_per_second=100, bucket_size=5) as daemon, chromium() as ctx:
        assert daemon.console is not None
        page = await ctx.new_page()
        await page.goto(f"{daemon.console.url}/")
        await page.wait_for_function("() => window.htmx !== undefined")
        row = f"#campaign-{cid}"
        await page.evaluate("() => { window.__notReloaded = true }")
        assert await _progress(page, f"{row} progress") == 0
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
        await page.wait_for_function(f"() => document.querySelector('{row} progress').value > 0")
        first = await _progress(page, f"{row} progress")
        await page.wait_for_function(f"() => document.querySelector('{row} progress').value > {first}")
        answered = await page.inner_text(f"{row} td:nth-child(5)")
        await page.wait_for_function(
            f"() => document.querySelector('{row} td:nth-child(5)').innerText !== {answered!r}"
        )
        assert await page.evaluate("() => window.__notReloaded === true")
        await page.screenshot(path=str(artifacts / "console-board.png"))

        await page.click(f"{row} th a")
        await page.wait_for_selector("#live progress")
        await page.evaluate("() => { window.__notReloaded = true }")
        await page.wait_for_function(
            "() => document.querySelector('#progress-text').innerText.startsWith('300 / 300')", timeout=60_000
        )
        assert await page.evaluate("() => window.__notReloaded === true")
        await page.wait_for_function("() => document.querySelector('.status-line').innerText.includes('completed')")
        await page.set_viewport_size({"width": 1280, "height": 1320})
        await page.screenshot(path=str(artifacts / "console-campaign.png"))
    assert (artifacts / "console-board.png").stat().st_size > 10_000


async def test_pause_in_the_page_pauses_the_campaign_and_dialing_stops(
    db_url: str, sim: RunningSimulator, conn: asyncpg.Connection
) -> None:
    """The Pause button (used from the keyboard) sets campaigns.status = 'paused'; once the
    live calls end, no further call reaches the carrier. A resume made elsewhere (SQL)
    brings the Pause button back without a reload."""
    cid = await make_campaign(conn, 300)
    # 5 dials a second: a loaded machine's slow page load still finds the campaign running.
    async with console_daemon(db_url, sim.url, calls_per_second=5, bucket_size=1) as daemon, chromium() as ctx:
        assert daemon.console is not None
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
        page = await ctx.new_page()
        await page.goto(f"{daemon.console.url}/campaigns/{cid}")
        await page.wait_for_function("() => document.querySelector('#progress').value > 0")
        pause = page.get_by_role("button", name="Pause")
        await pause.focus()
        await page.keyboard.press("Enter")
        await page.wait_for_selector("text=The campaign is now paused.")
        assert await conn.fetchval("SELECT status FROM campaigns WHERE id = $1", cid) == "paused"

        async def no_live_calls() -> bool:
            return not await conn.fetchval(
                "SELECT count(*) FROM calls WHERE campaign_id = $1 AND status IN ('pending', 'in_progress')", cid
            )

        await wait_for(no_live_calls, 10, "the live calls to end")
        dialed = len(sim.simulator.calls)
        passes = daemon.scheduler.passes

        async def five_more_passes() -> bool:
            return daemon.scheduler.passes >= passes + 5

        await wait_for(five_more_passes, 10, "five scheduler passes")
        assert len(sim.simulator.calls) == dialed
        assert await conn.fetchval(
            "SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1 AND call_status IN ('pending', 'scheduled')",
            cid,
        ) > 0, "the campaign finished before the pause: nothing was left to stop"
        await page.wait_for_selector(".status-line >> text=paused")
        await page.evaluate("() => { window.__notReloaded = true }")
        await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
        await page.get_by_role("button", name="Pause").wait_for()
        assert await page.get_by_role("button", name="Resume").count() == 0
        assert await page.evaluate("() => window.__notReloaded === true")


async def test_an_illegal_action_shows_the_databases_reason_with_javascript_off(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """With scripts off the page still renders; a Start clicked on a page that went stale
    (the campaign was cancelled meanwhile) shows why it was refused."""
    cid = await make_campaign(conn, 5, name="Stale page")
    async with console_only(pool) as console, chromium(javascript=False) as ctx:
        page = await ctx.new_page()
        await page.goto(f"{console.url}/campaigns/{cid}")
        assert "0 / 5 contacts final" in await page.inner_text("#progress-text")
        assert await page.locator("table.contacts tbody tr").count() == 5
        await conn.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = $1", cid)
        await page.get_by_role("button", name="Start").click()
        notice = page.get_by_role("alert")
        await notice.wait_for()
        text = await notice.inner_text()
    assert f"campaign {cid}: status cannot change from cancelled to active (cancelled is final)" in text
    assert await conn.fetchval("SELECT status FROM campaigns WHERE id = $1", cid) == "cancelled"


async def test_csv_upload_in_the_page_imports_and_lists_rejected_lines(
    pool: asyncpg.Pool, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Choosing a CSV file and pressing Import runs the importer; the page reports the rejected lines."""
    cid = await make_campaign(conn, 0, name="Uploads")
    csv = tmp_path / "patients.csv"
    csv.write_text(
        "Nombre,phone_number,Cita\nLucía,612 345 678,lunes\nBad,12345,martes\n"
        "Luis,699 000 111,miércoles\nMarta,+1 999,jueves\nIrene,633 222 111,viernes\n",
        encoding="utf-8",
    )
    async with console_only(pool) as console, chromium() as ctx:
        page = await ctx.new_page()
        await page.goto(f"{console.url}/campaigns/{cid}")
        await page.get_by_label("Country of numbers without +code (optional)").fill("ES")
        await page.get_by_label("CSV file", exact=True).set_input_files(str(csv))
        await page.get_by_role("button", name="Import").click()
        status = page.get_by_role("status")
        await status.wait_for()
        text = await status.inner_text()
    assert "imported 3 new, 0 existing, 2 rejected; 3 linked into the campaign" in text
    assert "line 3:" in text and "line 5:" in text
    assert await conn.fetchval("SELECT count(*) FROM campaign_contacts WHERE campaign_id = $1", cid) == 3


async def test_the_results_download_has_a_row_per_contact(
    pool: asyncpg.Pool, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Clicking "Download CSV" on a campaign page saves the results export: a header
    and one row per contact."""
    cid = await make_campaign(conn, 6, name="Downloads")
    async with console_only(pool) as console, chromium() as ctx:
        page = await ctx.new_page()
        await page.goto(f"{console.url}/campaigns/{cid}")
        async with page.expect_download() as info:
            await page.get_by_role("link", name="Download CSV").click()
        download = await info.value
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
    assert saved.name == f"campaign-{cid}.csv"
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 6 and lines[0].startswith("campaign_id,")
