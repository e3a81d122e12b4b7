"""`dialer blackout add|remove|list`: days on which nobody is called, for one campaign
(`--campaign ID`) or for every campaign (docs/campaigns.md#calendar). A row counts
from the next claim; the check is the claim's own, on the contact's local date."""

from __future__ import annotations

import argparse
import uuid
from datetime import date
from typing import Any

from rich.table import Table
from rich.text import Text

from dialer.database import Connection
from dialer.operator.common import CommandFailed, campaign_id_arg, command_handler, make_console
from dialer.store.calendars import Blackout, BlackoutStore
from dialer.store.campaigns import CampaignStore
from dialer.text import printable


def day_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD, e.g. 2026-12-24)") from None


def _scope(campaign_id: uuid.UUID | None) -> str:
    return "every campaign" if campaign_id is None else f"campaign {campaign_id}"


async def _known_campaign(conn: Connection, campaign_id: uuid.UUID | None) -> None:
    if campaign_id is not None and await CampaignStore(conn).get(campaign_id) is None:
        raise CommandFailed(f"no campaign with id {campaign_id}")


async def _add(args: argparse.Namespace, conn: Connection) -> int:
    await _known_campaign(conn, args.campaign)
    store = BlackoutStore(conn)
    for day in args.days:
        change = await store.add(day, campaign_id=args.campaign, reason=args.reason)
        verb = "added" if change.added else "already listed"
        reason = change.blackout.reason or "no reason given"
        print(printable(f"{verb}: {day.isoformat()} for {_scope(args.campaign)} ({reason})"))
    return 0


async def _remove(args: argparse.Namespace, conn: Connection) -> int:
    store = BlackoutStore(conn)
    missing = []
    for day in args.days:
        if await store.remove(day, campaign_id=args.campaign):
            print(f"removed: {day.isoformat()} for {_scope(args.campaign)}")
        else:
            missing.append(day.isoformat())
    if missing:
        raise CommandFailed(f"no blackout for {_scope(args.campaign)} on {', '.join(missing)}")
    return 0


def _table(rows: list[Blackout]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("day", "weekday", "applies to", "reason", "id"):
        table.add_column(column, no_wrap=column in ("day", "id"))
    for b in rows:
        scope = "every campaign" if b.campaign_id is None else f"{b.campaign_name} ({b.campaign_id})"
        # Operator data goes in as Text: shown as written, never read as Rich markup.
        table.add_row(
            b.day.isoformat(), f"{b.day:%a}", Text(printable(scope)), Text(printable(b.reason or "")),
            str(b.id),
        )
    return table


async def _list(args: argparse.Namespace, conn: Connection) -> int:
    await _known_campaign(conn, args.campaign)
    rows = await BlackoutStore(conn).entries(campaign_id=args.campaign, since=args.since)
    if not rows:
        print("no blackout days")
        return 0
    make_console().print(_table(rows))
    return 0


def register(blackout: Any) -> None:
    """Add the `blackout` commands to that group's subparsers."""
    scope_help = "only this campaign (default: every campaign)"
    p = blackout.add_parser(
        "add",
        help="close one or more days: nobody is called (contact's local date)",
        description="A day closed for one campaign (--campaign) or for every campaign. Adding a "
        "day again keeps it and takes the new --reason.",
    )
    p.add_argument("days", type=day_arg, nargs="+", metavar="DAY", help="YYYY-MM-DD")
    p.add_argument("--campaign", type=campaign_id_arg, metavar="ID", help=scope_help)
    p.add_argument("--reason", help="shown by `campaign status` (e.g. 'clinic closed')")
    p.set_defaults(handler=command_handler(_add))

    p = blackout.add_parser("remove", help="reopen days (in the same scope they were added)")
    p.add_argument("days", type=day_arg, nargs="+", metavar="DAY", help="YYYY-MM-DD")
    p.add_argument("--campaign", type=campaign_id_arg, metavar="ID", help=scope_help)
    p.set_defaults(handler=command_handler(_remove))

    p = blackout.add_parser("list", help="blackout days by date")
    p.add_argument(
        "--campaign", type=campaign_id_arg, metavar="ID",
        help="only the days that apply to this campaign (its own and every campaign's)",
    )
    p.add_argument("--since", type=day_arg, metavar="DAY", help="from this day on")
    p.set_defaults(handler=command_handler(_list))
