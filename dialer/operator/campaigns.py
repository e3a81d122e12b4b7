"""`dialer campaign …`: create a campaign, add contacts, steer it (start, pause,
resume, cancel), list and follow campaigns. Steering only writes `campaigns.status`;
the daemon hears of it through the NOTIFY trigger on that column."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from dialer import progress
from dialer.config import Settings
from dialer.database import Connection
from dialer.errors import TemplateError
from dialer.menu import menu_problem
from dialer.models import Campaign, CampaignStatus
from dialer.operator import rules
from dialer.operator.checks import check_campaign, enforce
from dialer.operator.common import (
    CommandFailed,
    ConfiguredCommand,
    UsageError,
    add_region,
    caller_id_arg,
    campaign_id_arg,
    command_handler,
    configured_handler,
    days_arg,
    hours_arg,
    log,
    make_console,
    non_negative_arg,
    open_campaign,
    positive_arg,
    rate_arg,
    script_arg,
    steer,
    timestamp_arg,
    to_utc,
    zone_arg,
)
from dialer.operator.contacts import add_format_options, file_format, import_contacts
from dialer.store.campaigns import CampaignProgress, CampaignStore, NewCampaign
from dialer.text import printable
from dialer.twiml import validate_template


def menu_repeats_arg(text: str) -> int:
    value = non_negative_arg(text)
    if value > 10:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most 10")
    return value


def draft_of(new: NewCampaign) -> Campaign:
    """The campaign `new` would create, as validation sees it (the schema's defaults
    for what is not given)."""
    return Campaign(
        id=uuid.UUID(int=0),
        name=new.name,
        status=CampaignStatus.DRAFT,
        script_template=new.script_template,
        caller_id=new.caller_id,
        timezone=new.timezone,
        schedule_start=new.schedule_start,
        schedule_end=new.schedule_end,
        calling_hours_start=new.calling_hours_start,
        calling_hours_end=new.calling_hours_end,
        calling_days=new.calling_days,
        max_retries=2 if new.max_retries is None else new.max_retries,
        retry_delay_minutes=60 if new.retry_delay_minutes is None else new.retry_delay_minutes,
        max_concurrent_calls=new.max_concurrent_calls,
        machine_detection=new.machine_detection,
        machine_is_failure=False,
        record_calls=new.record_calls,
        ring_timeout_seconds=30,
        time_limit_seconds=600,
        last_error=None,
        menu=new.menu,
        menu_repeats=1 if new.menu_repeats is None else new.menu_repeats,
        retry_no_response=new.retry_no_response,
        voicemail_template=new.voicemail_template,
        language=new.language,
        voice=new.voice,
        calls_per_second=new.calls_per_second,
    )


def schedule_window(
    start: datetime | None, end: datetime | None, zone: str
) -> tuple[datetime | None, datetime | None]:
    """--start/--end as the naive UTC the schema stores; times without an offset are
    the campaign's wall clock in `zone` (docs/campaigns.md)."""
    start_utc = to_utc(start, zone, "--start") if start else None
    end_utc = to_utc(end, zone, "--end") if end else None
    if start_utc and end_utc and end_utc < start_utc:
        raise UsageError(
            f"--end ({end_utc:%Y-%m-%d %H:%M} UTC) is before --start ({start_utc:%Y-%m-%d %H:%M} UTC)"
        )
    return start_utc, end_utc


async def _campaign_create(args: argparse.Namespace, conn: Connection, settings: Settings) -> int:
    if not args.name.strip() or len(args.name) > 255:
        raise UsageError("NAME must be 1 to 255 characters")
    for line in rules.apply_rules(args):
        print(line, file=sys.stderr)  # stdout stays the new id alone, for scripts
    # After the rules: a preset may give the zone --start/--end are read in.
    start, end = schedule_window(args.start, args.end, args.timezone or settings.dialer.default_timezone)
    hours = args.hours or (None, None)
    menu = menu_arg(args.menu) if args.menu is not None else None
    if args.voicemail is not None:
        check_voicemail(args.voicemail)
    new = NewCampaign(
        name=args.name.strip(),
        description=args.description,
        script_template=args.script,
        calling_hours_start=hours[0],
        calling_hours_end=hours[1],
        calling_days=args.days,
        timezone=args.timezone,
        holiday_calendar=args.holiday_calendar,
        max_retries=args.max_retries,
        retry_delay_minutes=args.retry_delay,
        caller_id=args.caller_id,
        max_concurrent_calls=args.max_concurrent,
        schedule_start=start,
        schedule_end=end,
        machine_detection=args.machine_detection,
        record_calls=args.record,
        menu=menu,
        menu_repeats=args.menu_repeats,
        retry_no_response=args.retry_no_response,
        voicemail_template=args.voicemail,
        language=args.language,
        voice=args.voice,
        calls_per_second=args.calls_per_second,
    )
    store = CampaignStore(conn)
    enforce(await check_campaign(store, draft_of(new), settings, with_contacts=False), "campaign not created")
    campaign_id = await store.create(new)
    log.debug("campaign_created", campaign_id=str(campaign_id))
    print(campaign_id)
    return 0


def check_voicemail(text: str) -> None:
    """CommandFailed (exit 1) naming the problem of a --voicemail template."""
    try:
        validate_template(text)
    except TemplateError as exc:
        raise CommandFailed(f"--voicemail: {str(exc).removeprefix('script_template: ')}") from None


def menu_arg(text: str) -> Any:
    """The menu of `--menu TEXT|@FILE` as decoded JSON; CommandFailed (exit 1) naming
    the problem when it cannot be read or is not a valid menu (docs/campaigns.md#menus)."""
    where = "--menu"
    if text.startswith("@"):
        where = f"--menu {text[1:]}"
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandFailed(f"{where}: cannot read the file: {exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandFailed(f"{where}: not JSON: {exc}") from None
    problem = menu_problem(raw, validate_template)
    if problem:
        raise CommandFailed(f"{where}: {problem}")
    return raw


async def _campaign_add_contacts(args: argparse.Namespace, conn: Connection) -> int:
    if args.csv:
        rejects = Path(args.rejects) if args.rejects else None
        fmt = file_format(args)
        return await import_contacts(
            conn, Path(args.csv), args.id, args.default_region, fmt=fmt, rejects=rejects
        )
    await open_campaign(conn, args.id)
    added = await CampaignStore(conn).add_all_contacts(args.id)
    print(f"added {added} contacts to campaign {args.id}")
    return 0


NO_DAEMON_WARNING = (
    "warning: no daemon has a fresh heartbeat: nothing is dialed until one runs (`dialer run`)"
)


def _transition(command: str) -> ConfiguredCommand:
    async def run(args: argparse.Namespace, conn: Connection, settings: Settings) -> int:
        store = CampaignStore(conn)

        async def checked(campaign: Campaign) -> None:
            verdict = await check_campaign(store, campaign, settings)
            enforce(verdict, f"cannot {command} campaign {campaign.id}")

        target = await steer(store, args.id, command, before_activation=checked)
        print(f"campaign {args.id} is now {target}")
        if target == CampaignStatus.ACTIVE and not await store.live_instances(
            settings.dialer.instance_timeout_seconds
        ):
            print(NO_DAEMON_WARNING, file=sys.stderr)
        return 0

    return run


async def _campaign_list(args: argparse.Namespace, conn: Connection) -> int:
    make_console().print(progress.render_list(await CampaignStore(conn).list_all()))
    return 0


async def _campaign_status(args: argparse.Namespace, conn: Connection, settings: Settings) -> int:
    store = CampaignStore(conn)

    async def snapshot(campaign_id: uuid.UUID) -> CampaignProgress | None:
        # One consistent moment: the counters and the reason read in one snapshot.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            found = await store.progress(campaign_id)
            if found is None:
                return None
            dialing = await store.dialing(
                campaign_id,
                default_timezone=settings.dialer.default_timezone,
                instance_timeout_seconds=settings.dialer.instance_timeout_seconds,
            )
        return dataclasses.replace(found, dialing=dialing)

    async def fetch() -> list[CampaignProgress]:
        ids = [args.id] if args.id else await store.open_ids()
        snapshots = [await snapshot(i) for i in ids]
        if args.id and snapshots[0] is None:
            raise CommandFailed(f"no campaign with id {args.id}")
        return [s for s in snapshots if s is not None]

    console = make_console()
    if args.watch:
        # Ctrl-C ends a watch; it is not a failure.
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            await progress.watch(fetch, console, interval=args.interval)
        return 0
    console.print(progress.render_many(await fetch()))
    return 0


async def _campaign_history(args: argparse.Namespace, conn: Connection) -> int:
    store = CampaignStore(conn)
    if await store.get(args.id) is None:
        raise CommandFailed(f"no campaign with id {args.id}")
    # One line per change, oldest first: plain text that grep and a spreadsheet take.
    for entry in await store.history(args.id):
        change = f"created {entry.to_status}"
        if entry.from_status is not None:
            change = f"{entry.from_status} → {entry.to_status}"
        print(f"{entry.changed_at:%Y-%m-%d %H:%M:%S} UTC  {change:<22}  {printable(entry.changed_by)}")
    return 0


def register(campaign: Any) -> None:
    """Add the `campaign` commands to that group's subparsers."""
    p = campaign.add_parser(
        "create",
        help="create a draft campaign and print its id",
        description="--start/--end: times with an offset are converted to UTC; times without one are "
        "the campaign's local time (--timezone, else dialer.default_timezone).",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description")
    p.add_argument(
        "--script", type=script_arg, metavar="TEXT|@FILE", help="script template ({{first_name}} …)"
    )
    p.add_argument(
        "--hours", type=hours_arg, metavar="HH:MM-HH:MM", help="calling hours, local to the contact"
    )
    p.add_argument("--days", type=days_arg, metavar="DAYS", help="ISO weekdays, 1 = Monday: 1-5 or 1,2,3")
    p.add_argument(
        "--timezone", type=zone_arg, metavar="ZONE", help="IANA zone for contacts without their own"
    )
    p.add_argument("--max-retries", type=non_negative_arg, metavar="N")
    p.add_argument("--retry-delay", type=non_negative_arg, metavar="MIN", help="minutes between attempts")
    p.add_argument("--caller-id", type=caller_id_arg, metavar="+E164", help="number to call from")
    p.add_argument(
        "--max-concurrent", type=positive_arg, metavar="N", help="this campaign's cap on live calls"
    )
    p.add_argument("--start", type=timestamp_arg, metavar="ISO", help="schedule start (ISO 8601)")
    p.add_argument("--end", type=timestamp_arg, metavar="ISO", help="schedule end (ISO 8601)")
    p.add_argument("--machine-detection", action="store_true", help="ask the carrier to detect machines")
    p.add_argument("--record", action="store_true", help="record calls")
    rules.add_arguments(p)
    p.set_defaults(handler=configured_handler(_campaign_create))
    p.add_argument(
        "--menu",
        metavar="JSON|@FILE",
        help="keypad menu: key → outcome/action (docs/campaigns.md#menus); checked here",
    )
    p.add_argument(
        "--menu-repeats",
        type=menu_repeats_arg,
        metavar="N",
        help="readings again without a key (0-10, default 1)",
    )
    p.add_argument("--retry-no-response", action="store_true", help="retry contacts who press nothing")
    p.add_argument(
        "--voicemail",
        type=script_arg,
        metavar="TEXT|@FILE",
        help="message left on answering machines (needs --machine-detection)",
    )
    p.add_argument(
        "--language", metavar="LANG", help="of every Say/Gather, e.g. es-ES (default: twilio.language)"
    )
    p.add_argument("--voice", metavar="VOICE", help="e.g. Polly.Lucia (default: twilio.voice)")
    p.add_argument(
        "--calls-per-second",
        type=rate_arg,
        metavar="RATE",
        help="this campaign's own dial rate, within dialer.calls_per_second (docs/campaigns.md#dial-rate)",
    )

    p = campaign.add_parser("add-contacts", help="add contacts to a campaign")
    p.add_argument("id", type=campaign_id_arg, metavar="ID")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every contact in the database")
    which.add_argument("--csv", metavar="FILE", help="import a CSV file into the campaign")
    add_region(p)
    add_format_options(p)
    p.set_defaults(handler=command_handler(_campaign_add_contacts))

    helps = {
        "start": "draft or paused → active",
        "pause": "active → paused (live calls finish)",
        "resume": "paused → active (the same as start)",
        "cancel": "any open campaign → cancelled",
    }
    for command, text in helps.items():
        p = campaign.add_parser(command, help=text)
        p.add_argument("id", type=campaign_id_arg, metavar="ID")
        p.set_defaults(handler=configured_handler(_transition(command)))

    p = campaign.add_parser(
        "history", help="every status change of a campaign: when, from → to, by whom (role and program)"
    )
    p.add_argument("id", type=campaign_id_arg, metavar="ID")
    p.set_defaults(handler=command_handler(_campaign_history))

    p = campaign.add_parser("list", help="all campaigns, newest first")
    p.set_defaults(handler=command_handler(_campaign_list))

    p = campaign.add_parser("status", help="progress of one campaign (default: every open one)")
    p.add_argument("id", type=campaign_id_arg, metavar="ID", nargs="?")
    p.add_argument(
        "--watch",
        action="store_true",
        help="follow live until final (Ctrl-C stops); without a terminal, one line per change",
    )
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.set_defaults(handler=configured_handler(_campaign_status))
