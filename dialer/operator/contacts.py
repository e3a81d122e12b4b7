"""`dialer contacts import` and `dialer dnc add|remove|import`: loading contacts and
the do-not-call list from CSV files (the parsing lives in dialer.importer)."""

from __future__ import annotations

import argparse
import codecs
import sys
import uuid
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from dialer.database import Connection
from dialer.import_columns import ColumnError, parse_map
from dialer.importer import ImportFormat, import_csv, import_dnc_csv
from dialer.operator.common import (
    CommandFailed,
    UsageError,
    add_region,
    campaign_id_arg,
    command_handler,
    e164,
    make_console,
    open_campaign,
)
from dialer.store.contacts import DoNotCallStore
from dialer.text import printable

# The exit status of an import that committed but rejected rows (docs/operations.md).
EXIT_REJECTED = 3


def encoding_arg(text: str) -> str:
    try:
        return codecs.lookup(text).name
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {text!r} (e.g. utf-8, cp1252, latin-1)") from None


def delimiter_arg(text: str) -> str:
    value = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ","}.get(text.lower(), text)
    if len(value) != 1 or value in '"\r\n':
        raise argparse.ArgumentTypeError(f"{text!r} is not one delimiter character (, ; | or tab)")
    return value


def add_format_options(p: argparse.ArgumentParser) -> None:
    """--delimiter, --encoding, --map and --rejects of a contacts import."""
    p.add_argument(
        "--delimiter", type=delimiter_arg, metavar="CHAR", help="field separator (default: detected)"
    )
    p.add_argument(
        "--encoding", type=encoding_arg, metavar="NAME", help="utf-8, cp1252, latin-1 … (default: detected)"
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="HEADER=COLUMN",
        help="read column HEADER as COLUMN (phone_number, first_name, last_name, email, timezone, "
        "ignore, or a custom field name); repeatable",
    )
    p.add_argument(
        "--rejects", metavar="FILE", help="write the rejected rows, with the reason, to this CSV file"
    )


def file_format(args: argparse.Namespace) -> ImportFormat:
    """The ImportFormat the options describe (UsageError for a malformed --map)."""
    try:
        mapping = parse_map(args.map)
    except ColumnError as exc:
        raise UsageError(str(exc)) from None
    return ImportFormat(encoding=args.encoding, delimiter=args.delimiter, mapping=mapping)


async def import_contacts(
    conn: Connection,
    path: Path,
    campaign_id: uuid.UUID | None,
    region: str | None,
    *,
    fmt: ImportFormat | None = None,
    rejects: Path | None = None,
) -> int:
    """Import a CSV file, into a campaign when `campaign_id` is given (shared by
    `contacts import` and `campaign add-contacts --csv`). Exit status 0, or
    EXIT_REJECTED when rows were rejected (the rest is imported all the same)."""
    if campaign_id is not None:
        await open_campaign(conn, campaign_id)
    options: dict[str, Any] = {
        "campaign_id": campaign_id,
        "default_region": region,
        "report": print,
        "file_format": fmt,
        "rejects": rejects,
    }
    if not sys.stdout.isatty():
        result = await import_csv(conn, path, **options)
    else:
        # A live bar by bytes read; rejected-row lines print above it (rich redirects stdout).
        columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
        with Progress(*columns, console=make_console(), transient=True) as bar:
            task = bar.add_task("import", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = await import_csv(conn, path, progress=advance, **options)
    print(result.summary())
    if campaign_id is not None:
        print(f"linked {result.linked} contacts into campaign {campaign_id}")
        if result.updated:
            print(f"updated the fields of {result.updated} contacts already in it")
    if result.rejected and rejects is not None:
        print(f"rejected rows written to {printable(str(rejects))}")
    return EXIT_REJECTED if result.rejected else 0


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
    rejects = Path(args.rejects) if args.rejects else None
    fmt = file_format(args)
    return await import_contacts(
        conn, Path(args.file), args.campaign, args.default_region, fmt=fmt, rejects=rejects
    )


def register(contacts: Any, dnc: Any) -> None:
    """Add `contacts import` and the `dnc` commands to their groups' subparsers."""
    p = contacts.add_parser(
        "import",
        help="import contacts from a CSV file (idempotent)",
        description="Columns by header (English or Spanish: phone/teléfono/móvil, nombre, apellidos, "
        "correo …): first_name, last_name, phone_number (required), email, timezone; any other column "
        "becomes a custom field. A row with a known number and the same name (or no name) reuses that "
        "contact unchanged. Exit status 3 when rows were rejected (the rest is imported).",
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument(
        "--campaign", type=campaign_id_arg, metavar="ID", help="also add the contacts to this campaign"
    )
    add_region(p)
    add_format_options(p)
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
