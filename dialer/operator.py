"""The operator's subcommands: `contacts`, `campaign` and `dnc`.

Each handler opens one connection, calls a store (all SQL lives in dialer.store),
and prints. Steering a campaign only writes `campaigns.status`; the daemon hears of it
through the NOTIFY trigger on that column. Exit codes: 0 ok, 1 the command failed
(refused transition, unknown id, unreadable file), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from dialer import database, numbers, progress
from dialer.config import Settings
from dialer.database import Connection
from dialer.errors import DialerError
from dialer.importer import import_csv, import_dnc_csv
from dialer.models import Campaign, CampaignStatus
from dialer.store.campaigns import FINAL_CAMPAIGN_STATUSES, CampaignStore, NewCampaign
from dialer.store.contacts import DoNotCallStore
from dialer.text import printable

log = structlog.get_logger(__name__)

Work = Callable[[Connection], Awaitable[int]]

# (allowed current statuses, new status) of each steering command (docs/campaigns.md#lifecycle).
TRANSITIONS: dict[str, tuple[frozenset[CampaignStatus], CampaignStatus]] = {
    "start": (frozenset({CampaignStatus.DRAFT, CampaignStatus.PAUSED}), CampaignStatus.ACTIVE),
    "pause": (frozenset({CampaignStatus.ACTIVE}), CampaignStatus.PAUSED),
    "resume": (frozenset({CampaignStatus.PAUSED}), CampaignStatus.ACTIVE),
    "cancel": (
        frozenset({CampaignStatus.DRAFT, CampaignStatus.ACTIVE, CampaignStatus.PAUSED}),
        CampaignStatus.CANCELLED,
    ),
}


class CommandFailed(DialerError):
    """The command could not do what was asked; the message says why (exit 1)."""


class UsageError(DialerError):
    """The arguments are inconsistent in a way argparse cannot see (exit 2)."""


# ---------------------------------------------------------------- argument types


def _campaign_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a campaign id (a UUID)") from None


def _hours(text: str) -> tuple[time, time]:
    match = re.fullmatch(r"\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not HH:MM-HH:MM (e.g. 09:00-21:00)")
    try:
        start, end = (time.fromisoformat(part.zfill(5)) for part in match.groups())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} has an impossible time of day") from None
    if start == end:
        raise argparse.ArgumentTypeError(f"{text!r} starts and ends at the same time")
    return start, end


def _days(text: str) -> list[int]:
    days: set[int] = set()
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"([1-7])(?:-([1-7]))?", part)
        if not match:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a list of ISO weekdays 1-7 (1 = Monday), e.g. 1-5 or 1,2,3"
            )
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first:
            raise argparse.ArgumentTypeError(f"{part!r}: a range must go upwards (e.g. 1-5)")
        days.update(range(first, last + 1))
    return sorted(days)


def _zone(text: str) -> str:
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown IANA time zone {text!r} (e.g. Europe/Madrid)") from None
    return text


def _caller_id(text: str) -> str:
    if not text.startswith("+"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an E.164 number (write +<country><number>)")
    try:
        return numbers.parse(text).e164
    except numbers.InvalidNumber as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _utc_timestamp(text: str) -> datetime:
    """ISO 8601 → naive UTC (the schema's timestamps hold UTC); naive input is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2025-03-01T09:00+01:00)"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _script(text: str) -> str:
    if not text.startswith("@"):
        return text
    try:
        return Path(text[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read script file {text[1:]}: {exc}") from None


def _region(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a two-letter country code such as ES or US")
    return text.upper()


# ---------------------------------------------------------------- plumbing


def _run(settings: Settings, work: Work) -> int:
    """Run `work` on one connection to the configured (or embedded) database."""

    async def go(url: str) -> int:
        async with database.connection(url, settings.database) as conn:
            return await work(conn)

    # A database failure leaves the store (or the connection's block) as
    # DatabaseUnavailable, whose one line the CLI prints (exit 1); a missing schema
    # says to run `dialer migrate`.
    with database.database_endpoints(settings.database) as endpoints:
        return asyncio.run(go(endpoints.url))


def _handler(
    work: Callable[[argparse.Namespace, Connection], Awaitable[int]],
) -> Callable[[argparse.Namespace, Settings], int]:
    """Adapt `async (args, conn) -> int` to the CLI's `(args, settings) -> int`,
    turning UsageError into exit 2."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return _run(settings, lambda conn: work(args, conn))
        except UsageError as exc:
            print(f"error: {printable(str(exc))}", file=sys.stderr)
            return 2

    return handler


def _console() -> Console:
    # Built per command on the current sys.stdout: no module-level console to share.
    # Piped output is read by scripts and grep: wide enough that ids and names never wrap.
    width = None if sys.stdout.isatty() else 200
    return Console(file=sys.stdout, highlight=False, width=width)


async def open_campaign(conn: Connection, campaign_id: uuid.UUID) -> Campaign:
    """The campaign, or CommandFailed when it does not exist or is final (an import
    into it is refused: the CLI's and the console's alike)."""
    campaign = await CampaignStore(conn).get(campaign_id)
    if campaign is None:
        raise CommandFailed(f"no campaign with id {campaign_id}")
    if campaign.status in FINAL_CAMPAIGN_STATUSES:
        raise CommandFailed(f"campaign {campaign_id} is {campaign.status}: it takes no more contacts")
    return campaign


async def _import_contacts(
    conn: Connection, path: Path, campaign_id: uuid.UUID | None, region: str | None
) -> int:
    """Shared by `contacts import` and `campaign add-contacts --csv`."""
    if campaign_id is not None:
        await open_campaign(conn, campaign_id)
    if not sys.stdout.isatty():
        result = await import_csv(conn, path, campaign_id=campaign_id, default_region=region, report=print)
    else:
        # A live bar by bytes read; rejected-row lines print above it (rich redirects stdout).
        columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
        with Progress(*columns, console=_console(), transient=True) as bar:
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


# ---------------------------------------------------------------- contacts


async def _contacts_import(args: argparse.Namespace, conn: Connection) -> int:
    return await _import_contacts(conn, Path(args.file), args.campaign, args.default_region)


# ---------------------------------------------------------------- campaign


async def _campaign_create(args: argparse.Namespace, conn: Connection) -> int:
    if args.start and args.end and args.end < args.start:
        raise UsageError(
            f"--end ({args.end:%Y-%m-%d %H:%M} UTC) is before --start ({args.start:%Y-%m-%d %H:%M} UTC)"
        )
    if not args.name.strip() or len(args.name) > 255:
        raise UsageError("NAME must be 1 to 255 characters")
    hours = args.hours or (None, None)
    new = NewCampaign(
        name=args.name.strip(),
        description=args.description,
        script_template=args.script,
        calling_hours_start=hours[0],
        calling_hours_end=hours[1],
        calling_days=args.days,
        timezone=args.timezone,
        max_retries=args.max_retries,
        retry_delay_minutes=args.retry_delay,
        caller_id=args.caller_id,
        max_concurrent_calls=args.max_concurrent,
        schedule_start=args.start,
        schedule_end=args.end,
        machine_detection=args.machine_detection,
        record_calls=args.record,
    )
    campaign_id = await CampaignStore(conn).create(new)
    log.debug("campaign_created", campaign_id=str(campaign_id))
    print(campaign_id)
    return 0


async def _campaign_add_contacts(args: argparse.Namespace, conn: Connection) -> int:
    if args.csv:
        return await _import_contacts(conn, Path(args.csv), args.id, args.default_region)
    await open_campaign(conn, args.id)
    added = await CampaignStore(conn).add_all_contacts(args.id)
    print(f"added {added} contacts to campaign {args.id}")
    return 0


async def steer(store: CampaignStore, campaign_id: uuid.UUID, command: str) -> str:
    """Apply a steering command (start, pause, resume, cancel) and return the new
    status; CommandFailed with the reason when the change is refused. The CLI and the
    console both steer through here, so both refuse alike and say the same."""
    allowed, target = TRANSITIONS[command]
    result = await store.transition(campaign_id, allowed, target)
    if result.status is None:
        raise CommandFailed(f"no campaign with id {campaign_id}")
    if not result.changed:
        expected = " or ".join(sorted(allowed))
        raise CommandFailed(
            f"campaign {campaign_id} is {result.status}: cannot {command} it (only a {expected} campaign)"
        )
    log.debug("campaign_status_set", campaign_id=str(campaign_id), status=target, command=command)
    return target


def _transition(command: str) -> Callable[[argparse.Namespace, Connection], Awaitable[int]]:
    async def run(args: argparse.Namespace, conn: Connection) -> int:
        target = await steer(CampaignStore(conn), args.id, command)
        print(f"campaign {args.id} is now {target}")
        return 0

    return run


async def _campaign_list(args: argparse.Namespace, conn: Connection) -> int:
    _console().print(progress.render_list(await CampaignStore(conn).list_all()))
    return 0


async def _campaign_status(args: argparse.Namespace, conn: Connection) -> int:
    store = CampaignStore(conn)

    async def fetch() -> list[Any]:
        ids = [args.id] if args.id else await store.open_ids()
        snapshots = [await store.progress(i) for i in ids]
        if args.id and snapshots[0] is None:
            raise CommandFailed(f"no campaign with id {args.id}")
        return [s for s in snapshots if s is not None]

    console = _console()
    if args.watch:
        # Ctrl-C ends a watch; it is not a failure.
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            await progress.watch(fetch, console, interval=args.interval)
        return 0
    console.print(progress.render_many(await fetch()))
    return 0


# ---------------------------------------------------------------- dnc


def _e164(text: str, region: str | None) -> str:
    try:
        return numbers.parse(text, region).e164
    except numbers.InvalidNumber as exc:
        raise UsageError(str(exc)) from None


async def _dnc_add(args: argparse.Namespace, conn: Connection) -> int:
    change = await DoNotCallStore(conn).add(_e164(args.number, args.default_region), args.reason)
    print(f"{'added' if change.added else 'already listed'}: {change.phone_number}")
    return 0


async def _dnc_remove(args: argparse.Namespace, conn: Connection) -> int:
    number = _e164(args.number, args.default_region)
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


# ---------------------------------------------------------------- parsers


def _add_region(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--default-region",
        type=_region,
        metavar="CC",
        help="country (ISO 3166, e.g. ES) of numbers written without +<country code>",
    )


def register_cli(sub: Any) -> None:
    """Add the `contacts`, `campaign` and `dnc` subcommands to the `dialer` parser."""
    contacts = sub.add_parser("contacts", help="load contacts")
    csub = contacts.add_subparsers(dest="contacts_command", metavar="COMMAND", required=True)
    p = csub.add_parser(
        "import",
        help="import contacts from a CSV file (idempotent)",
        description="Columns by header: first_name, last_name, phone_number (required), email, timezone; "
        "any other column becomes a custom field. Numbers already known reuse their contact unchanged.",
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument(
        "--campaign", type=_campaign_id, metavar="ID", help="also add the contacts to this campaign"
    )
    _add_region(p)
    p.set_defaults(handler=_handler(_contacts_import))

    campaign = sub.add_parser("campaign", help="create, steer and follow campaigns")
    ksub = campaign.add_subparsers(dest="campaign_command", metavar="COMMAND", required=True)
    p = ksub.add_parser(
        "create",
        help="create a draft campaign and print its id",
        description="Times with an offset are converted to UTC; times without one are taken as UTC.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description")
    p.add_argument("--script", type=_script, metavar="TEXT|@FILE", help="script template ({{first_name}} …)")
    p.add_argument("--hours", type=_hours, metavar="HH:MM-HH:MM", help="calling hours, local to the contact")
    p.add_argument("--days", type=_days, metavar="DAYS", help="ISO weekdays, 1 = Monday: 1-5 or 1,2,3")
    p.add_argument("--timezone", type=_zone, metavar="ZONE", help="IANA zone for contacts without their own")
    p.add_argument("--max-retries", type=_non_negative, metavar="N")
    p.add_argument("--retry-delay", type=_non_negative, metavar="MIN", help="minutes between attempts")
    p.add_argument("--caller-id", type=_caller_id, metavar="+E164", help="number to call from")
    p.add_argument("--max-concurrent", type=_positive, metavar="N", help="this campaign's cap on live calls")
    p.add_argument("--start", type=_utc_timestamp, metavar="ISO", help="schedule start (ISO 8601)")
    p.add_argument("--end", type=_utc_timestamp, metavar="ISO", help="schedule end (ISO 8601)")
    p.add_argument("--machine-detection", action="store_true", help="ask the carrier to detect machines")
    p.add_argument("--record", action="store_true", help="record calls")
    p.set_defaults(handler=_handler(_campaign_create))

    p = ksub.add_parser("add-contacts", help="add contacts to a campaign")
    p.add_argument("id", type=_campaign_id, metavar="ID")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every contact in the database")
    which.add_argument("--csv", metavar="FILE", help="import a CSV file into the campaign")
    _add_region(p)
    p.set_defaults(handler=_handler(_campaign_add_contacts))

    helps = {
        "start": "draft or paused → active",
        "pause": "active → paused (live calls finish)",
        "resume": "paused → active",
        "cancel": "any open campaign → cancelled",
    }
    for command, text in helps.items():
        p = ksub.add_parser(command, help=text)
        p.add_argument("id", type=_campaign_id, metavar="ID")
        p.set_defaults(handler=_handler(_transition(command)))

    p = ksub.add_parser("list", help="all campaigns, newest first")
    p.set_defaults(handler=_handler(_campaign_list))

    p = ksub.add_parser("status", help="progress of one campaign (default: every open one)")
    p.add_argument("id", type=_campaign_id, metavar="ID", nargs="?")
    p.add_argument("--watch", action="store_true", help="follow live until final (Ctrl-C stops)")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.set_defaults(handler=_handler(_campaign_status))

    dnc = sub.add_parser("dnc", help="the do-not-call list")
    dsub = dnc.add_subparsers(dest="dnc_command", metavar="COMMAND", required=True)
    p = dsub.add_parser("add", help="never call this number")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--reason")
    _add_region(p)
    p.set_defaults(handler=_handler(_dnc_add))
    p = dsub.add_parser("remove", help="take a number off the list")
    p.add_argument("number", metavar="NUMBER")
    _add_region(p)
    p.set_defaults(handler=_handler(_dnc_remove))
    p = dsub.add_parser("import", help="add the numbers of a CSV file (phone_number[, reason])")
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--reason", help="reason for rows without their own")
    _add_region(p)
    p.set_defaults(handler=_handler(_dnc_import))
