"""`dialer contacts import` and `dialer dnc add|remove|import`: loading contacts and
the do-not-call list from CSV files (the parsing lives in dialer.importer)."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from dialer.database import Connection
from dialer.importer import import_csv, import_dnc_csv
from dialer.operator.common import (
    CommandFailed,
    add_region,
    campaign_id_arg,
    command_handler,
    e164,
    make_console,
    open_campaign,
)
from dialer.store.contacts import DoNotCallStore


async def import_contacts(
    conn: Connection, path: Path, campaign_id: uuid.UUID | None, region: str | None
) -> int:
    """Import a CSV file, into a campaign when `campaign_id` is given (shared by
    `contacts import` and `campaign add-contacts --csv`)."""
    if campaign_id is not None:
        await open_campaign(conn, campaign_id)
    if not sys.stdout.isatty():
        result = await import_csv(conn, path, campaign_id=campaign_id, default_region=region, report=print)
    else:
        # A live bar by bytes read; rejected-row lines print above it (rich redirects stdout).
        columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
        with Progress(*columns, console=make_console(), transient=True) as bar:
            task = bar.add_task("import", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = await import_csv(
                conn, path, campaign_id=campaign_id, default_region=region, report=print, progress=advance
            )
    print(result.summary())
    if campaign_id is not None:
        print(f"linked {result.linked} contacts into campaign {campaign_id}")
    return 0


async def _dnc_add(args: argparse.Namespace, conn: Connection) -> int:
    change = await DoNotCallStore(conn).add(e164(args.number, args.default_region), args.reason)
    print(f"{'added' if change.added else 'already listed'}: {change.phone_number}")
    return 0


async def _dnc_remove(args: argparse.Namespace, conn: Connection) -> int:
    number = e164(args.number, args.default_region)
    if not await DoNotCallStore(conn).remove(number):
        raise CommandFailed(f"{number} is not on the do-not-call list")
    print(f"removed: {number}")
    return 0


async def _dnc_import(args: argparse.Namespace, conn: Connection) -> int:
    result = await import_dnc_csv(
        conn, Path(args.file), default_region=args.default_region, reason=args.reason, report=print
    )
    print(result.summary())
    return 0


async def _contacts_import(args: argparse.Namespace, conn: Connection) -> int:
    return await import_contacts(conn, Path(args.file), args.campaign, args.default_region)


def register(contacts: Any, dnc: Any) -> None:
    """Add `contacts import` and the `dnc` commands to their groups' subparsers."""
    p = contacts.add_parser(
        "import",
        help="import contacts from a CSV file (idempotent)",
        description="Columns by header: first_name, last_name, phone_number (required), email, timezone; "
        "any other column becomes a custom field. Numbers already known reuse their contact unchanged.",
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument(
        "--campaign", type=campaign_id_arg, metavar="ID", help="also add the contacts to this campaign"
    )
    add_region(p)
    p.set_defaults(handler=command_handler(_contacts_import))

    p = dnc.add_parser("add", help="never call this number")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--reason")
    add_region(p)
    p.set_defaults(handler=command_handler(_dnc_add))
    p = dnc.add_parser("remove", help="take a number off the list")
    p.add_argument("number", metavar="NUMBER")
    add_region(p)
    p.set_defaults(handler=command_handler(_dnc_remove))
    p = dnc.add_parser("import", help="add the numbers of a CSV file (phone_number[, reason])")
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--reason", help="reason for rows without their own")
    add_region(p)
    p.set_defaults(handler=command_handler(_dnc_import))
