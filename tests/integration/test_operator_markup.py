"""Operator data is shown as written: a campaign name or error holding Rich markup
(`[red]`, `oops [/nope]`) or terminal control characters neither crashes `dialer
campaign list` / `status` nor turns into colour or escape sequences."""

from __future__ import annotations

import asyncpg

from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture

NAMES = ["oops [/nope]", "[red]alarm[/red]", "[bold]", "clear\x1b[2Jscreen"]


async def _campaigns(conn: asyncpg.Connection) -> None:
    for name in NAMES:
        await conn.execute(
            "INSERT INTO campaigns (name, status, last_error) VALUES ($1, 'active', $2)", name, f"bad [/x] {name}"
        )


async def test_campaign_list_shows_markup_in_names_as_written(cli: Cli, conn: asyncpg.Connection) -> None:
    """`campaign list` (it crashed on `[/nope]` for everyone) prints each name
    literally; the escape sequence is shown escaped."""
    await _campaigns(conn)
    code, out, err = await cli("campaign", "list")
    assert code == 0, err
    for name in NAMES[:3]:
        assert name in out
    assert "clear\\x1b[2Jscreen" in out
    assert "\x1b" not in out


async def test_campaign_status_shows_markup_in_names_and_errors_as_written(
    cli: Cli, conn: asyncpg.Connection
) -> None:
    """`campaign status` shows names and last errors literally too."""
    await _campaigns(conn)
    code, out, err = await cli("campaign", "status")
    assert code == 0, err
    for name in NAMES[:3]:
        assert name in out
        assert f"last error: bad [/x] {name}" in out
    assert "\x1b" not in out
