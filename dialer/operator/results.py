"""`dialer campaign export` and `dialer calls`: what a campaign produced, without
writing SQL (docs/campaigns.md#results)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from rich.table import Table

from dialer.config import Settings
from dialer.database import Connection
from dialer.export import result_chunks
from dialer.operator.common import (
    CommandFailed,
    campaign_id_arg,
    command_handler,
    make_console,
    positive_arg,
    run,
)
from dialer.store.campaigns import CampaignStore
from dialer.store.results import ResultsStore
from dialer.text import markup_safe, printable


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    # Opened outside the `with`: an OSError of the body (a database socket) is not the file's.
    try:
        out = Path(path).open("w", encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as exc:
        raise CommandFailed(f"cannot write {printable(path)}: {exc.strerror or exc}") from None
    with out:
        yield out


async def export_campaign(
    conn: Connection, campaign_id: Any, out: TextIO, *, excel: bool, default_timezone: str
) -> int:
    """Write campaign_results of one campaign as CSV to `out` (dialer/export.py says
    how); returns the rows written."""
    campaign = await CampaignStore(conn).get(campaign_id)
    if campaign is None:
        raise CommandFailed(f"no campaign with id {campaign_id}")
    rows = 0
    chunks = result_chunks(ResultsStore(conn), campaign, excel=excel, default_timezone=default_timezone)
    async for text, n in chunks:
        out.write(text)
        rows += n
    return rows


def _export_handler(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: Connection) -> int:
        with _output(args.output) as out:
            rows = await export_campaign(
                conn, args.id, out, excel=args.excel, default_timezone=settings.dialer.default_timezone
            )
        if args.output is not None:
            print(f"wrote {rows} rows to {printable(args.output)}")
        return 0

    return run(settings, work)


async def _calls(args: argparse.Namespace, conn: Connection) -> int:
    if await CampaignStore(conn).get(args.id) is None:
        raise CommandFailed(f"no campaign with id {args.id}")
    attempts = await ResultsStore(conn).attempts(args.id, failed_only=args.failed, limit=args.limit)
    table = Table(box=None, pad_edge=False, header_style="bold")
    # The keypad columns only for a campaign whose callees answered (docs/campaigns.md#menus):
    # a one-way campaign's lines stay as narrow as before.
    keyed = any(a.response or a.digits for a in attempts)
    names = ["dialed (UTC)", "contact", "number", "try", "status", "outcome", "error", "answered_by"]
    for name in [*names, *(["response", "keys"] if keyed else []), "secs", "call_sid"]:
        table.add_column(name, no_wrap=True)  # one line per attempt, for grep
    for a in attempts:
        name = " ".join(p for p in (a.first_name, a.last_name) if p)
        error = " ".join(str(p) for p in (a.error_code, a.error_message) if p not in (None, ""))
        keys = [markup_safe(a.response or ""), markup_safe(a.digits or "")] if keyed else []
        table.add_row(
            f"{a.dialed_at:%Y-%m-%d %H:%M:%S}" if a.dialed_at else "-",
            markup_safe(name),
            a.phone_number,
            str(a.retry_count + 1),
            a.status,
            markup_safe(a.outcome or ""),
            markup_safe(error),
            markup_safe(a.answered_by or ""),
            *keys,
            "" if a.duration is None else str(a.duration),
            a.call_sid or "",
        )
    console = make_console()
    console.print(table)
    if len(attempts) == args.limit:
        console.print(f"(the first {args.limit}: --limit N shows more)")
    return 0


def register(campaign: Any, top: Any) -> None:
    """Add `campaign export` to the campaign group and `calls` to the top level."""
    p = campaign.add_parser(
        "export",
        help="the campaign's results as CSV (one row per contact), to stdout or a file",
        description="Columns: those of the campaign_results view. Times are UTC (ISO 8601) unless "
        "--excel, which writes ';'-separated UTF-8 with a byte-order mark and local times in the "
        "campaign's zone, for spreadsheets.",
    )
    p.add_argument("id", type=campaign_id_arg, metavar="ID")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--excel", action="store_true", help="';', a BOM and local times, for a spreadsheet")
    p.set_defaults(handler=_export_handler)

    p = top.add_parser(
        "calls", help="the attempts of a campaign: outcome, error, answered_by, response, duration"
    )
    p.add_argument("id", type=campaign_id_arg, metavar="CAMPAIGN_ID")
    p.add_argument("--failed", action="store_true", help="only failed attempts")
    p.add_argument("--limit", type=positive_arg, default=1000, metavar="N", help="at most N rows (1000)")
    p.set_defaults(handler=command_handler(_calls))
