"""`dialer campaign edit` and `dialer campaign preview`: changing a campaign's
settings (checked like `create`, docs/campaigns.md#editing), and hearing its script
as real contacts would before anyone is called."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from dialer import twiml
from dialer.config import Settings
from dialer.database import Connection
from dialer.errors import TemplateError
from dialer.models import Campaign, CampaignStatus
from dialer.operator.campaigns import check_voicemail, menu_arg, menu_repeats_arg
from dialer.operator.checks import check_campaign, enforce, missing_keys
from dialer.operator.common import (
    CommandFailed,
    caller_id_arg,
    campaign_id_arg,
    configured_handler,
    days_arg,
    hours_arg,
    non_negative_arg,
    positive_arg,
    rate_arg,
    script_arg,
    timestamp_arg,
    to_utc,
    zone_arg,
)
from dialer.operator.rules import calendar_arg
from dialer.store.campaigns import CampaignStore
from dialer.text import printable

EDITABLE_IN = frozenset({CampaignStatus.DRAFT, CampaignStatus.PAUSED})


class _Clear:
    """`none` given for an option: set the column to NULL (its default meaning)."""

    def __repr__(self) -> str:
        return "none"


CLEAR = _Clear()


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_clear(text: str) -> Any:
        return CLEAR if text.strip().lower() == "none" else parse(text)

    parse_or_clear.__name__ = getattr(parse, "__name__", "value")
    return parse_or_clear


def _changes(args: argparse.Namespace, campaign: Campaign, default_zone: str) -> dict[str, Any]:
    """Column → new value (None for NULL) of every option given."""

    def value(given: Any) -> Any:
        return None if given is CLEAR else given

    changes: dict[str, Any] = {}
    if args.name is not None:
        if not args.name.strip() or len(args.name) > 255:
            raise CommandFailed("--name must be 1 to 255 characters")
        changes["name"] = args.name.strip()
    simple = {
        "description": "description",
        "script": "script_template",
        "days": "calling_days",
        "timezone": "timezone",
        "max_retries": "max_retries",
        "retry_delay": "retry_delay_minutes",
        "caller_id": "caller_id",
        "max_concurrent": "max_concurrent_calls",
        "machine_detection": "machine_detection",
        "record": "record_calls",
        "holiday_calendar": "holiday_calendar",
        "menu_repeats": "menu_repeats",
        "retry_no_response": "retry_no_response",
        "language": "language",
        "voice": "voice",
        "calls_per_second": "calls_per_second",
    }
    for option, column in simple.items():
        given = getattr(args, option)
        if given is not None:
            changes[column] = value(given)
    if args.menu is not None:
        changes["menu"] = None if args.menu is CLEAR else menu_arg(args.menu)
    if args.voicemail is not None:
        if args.voicemail is not CLEAR:
            check_voicemail(args.voicemail)
        changes["voicemail_template"] = value(args.voicemail)
    if args.hours is not None:
        start, end = (None, None) if args.hours is CLEAR else args.hours
        changes.update(calling_hours_start=start, calling_hours_end=end)
    zone = changes.get("timezone", campaign.timezone) or default_zone
    for option, column in (("start", "schedule_start"), ("end", "schedule_end")):
        given = getattr(args, option)
        if given is not None:
            changes[column] = None if given is CLEAR else to_utc(given, zone, f"--{option}")
    return changes


async def _campaign_edit(args: argparse.Namespace, conn: Connection, settings: Settings) -> int:
    store = CampaignStore(conn)
    campaign = await store.get(args.id)
    if campaign is None:
        raise CommandFailed(f"no campaign with id {args.id}")
    if campaign.status not in EDITABLE_IN:
        raise _not_editable(campaign)
    changes = _changes(args, campaign, settings.dialer.default_timezone)
    if not changes:
        raise CommandFailed("nothing to change: give at least one option (see `dialer campaign edit --help`)")
    start = changes.get("schedule_start", campaign.schedule_start)
    end = changes.get("schedule_end", campaign.schedule_end)
    if start and end and end < start:
        raise CommandFailed(f"schedule_end ({end:%Y-%m-%d %H:%M} UTC) would be before schedule_start")
    known = {f.name for f in dataclasses.fields(Campaign)}
    edited = dataclasses.replace(campaign, **{k: v for k, v in changes.items() if k in known})
    enforce(await check_campaign(store, edited, settings), f"campaign {campaign.id} not changed")
    result = await store.update(campaign.id, changes, EDITABLE_IN)
    if not result.changed:
        # Its status changed between the read and the write (a start elsewhere).
        raise _not_editable(dataclasses.replace(campaign, status=result.status or campaign.status))
    print(f"campaign {campaign.id} updated: {', '.join(changes)}")
    return 0


def _not_editable(campaign: Campaign) -> CommandFailed:
    if campaign.status == CampaignStatus.ACTIVE:
        return CommandFailed(
            f"campaign {campaign.id} is active: pause it first (`dialer campaign pause`), edit, then resume; "
            "nothing may change under calls being dialed"
        )
    return CommandFailed(f"campaign {campaign.id} is {campaign.status}: a finished campaign is not edited")


async def _campaign_preview(args: argparse.Namespace, conn: Connection, settings: Settings) -> int:
    store = CampaignStore(conn)
    campaign = await store.get(args.id)
    if campaign is None:
        raise CommandFailed(f"no campaign with id {args.id}")
    try:
        twiml.validate_template(campaign.script_template or "")
    except TemplateError as exc:
        raise CommandFailed(f"campaign {campaign.id}: {exc}") from None
    sample = await store.sample_contacts(campaign.id, args.contacts)
    if not sample:
        raise CommandFailed(f"campaign {campaign.id} has no contacts yet: add some to preview its script")
    keys = twiml.custom_keys(campaign.script_template)
    for index, (contact_id, contact) in enumerate(sample, start=1):
        name = " ".join(p for p in (contact.first_name, contact.last_name) if p) or "(no name)"
        print(f"— contact {index} of {len(sample)}: {printable(name)} {contact.phone_number} ({contact_id})")
        if args.twiml:
            voice, language = settings.twilio.voice, settings.twilio.language
            text = twiml.render_twiml(campaign.script_template, contact, voice=voice, language=language)
        else:
            text = twiml.render_script(campaign.script_template, contact)
        # Line by line: a script's own line breaks stay, anything else a terminal acts on is escaped.
        print("\n".join(printable(line) for line in text.splitlines()))
        for key in missing_keys(keys, twiml.custom_values(contact)):
            print(f"warning: {{{{custom.{printable(key)}}}}} has no value for this contact", file=sys.stderr)
    return 0


def register(campaign: Any) -> None:
    """Add `campaign edit` and `campaign preview` to that group's subparsers."""
    p = campaign.add_parser(
        "edit",
        help="change a draft or paused campaign (checked like create)",
        description="Only the options given change; `none` clears an option (e.g. --end none). "
        "A draft or paused campaign only: pause an active one first. --start/--end without an offset "
        "are the campaign's local time.",
    )
    p.add_argument("id", type=campaign_id_arg, metavar="ID")
    p.add_argument("--name")
    p.add_argument("--description", type=_or_none(str))
    p.add_argument("--script", type=_or_none(script_arg), metavar="TEXT|@FILE")
    p.add_argument("--hours", type=_or_none(hours_arg), metavar="HH:MM-HH:MM|none")
    p.add_argument("--days", type=_or_none(days_arg), metavar="DAYS|none")
    p.add_argument("--timezone", type=_or_none(zone_arg), metavar="ZONE|none")
    p.add_argument("--max-retries", type=non_negative_arg, metavar="N")
    p.add_argument("--retry-delay", type=non_negative_arg, metavar="MIN")
    p.add_argument("--caller-id", type=_or_none(caller_id_arg), metavar="+E164|none")
    p.add_argument("--max-concurrent", type=_or_none(positive_arg), metavar="N|none")
    p.add_argument("--start", type=_or_none(timestamp_arg), metavar="ISO|none")
    p.add_argument("--end", type=_or_none(timestamp_arg), metavar="ISO|none")
    p.add_argument("--machine-detection", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--record", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--holiday-calendar", type=_or_none(calendar_arg), metavar="CODE|none")
    p.add_argument("--menu", type=_or_none(str), metavar="JSON|@FILE|none", help="keypad menu (checked)")
    p.add_argument("--menu-repeats", type=menu_repeats_arg, metavar="N")
    p.add_argument("--retry-no-response", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--voicemail", type=_or_none(script_arg), metavar="TEXT|@FILE|none")
    p.add_argument("--language", type=_or_none(str), metavar="LANG|none")
    p.add_argument("--voice", type=_or_none(str), metavar="VOICE|none")
    p.add_argument("--calls-per-second", type=_or_none(rate_arg), metavar="RATE|none")
    p.set_defaults(handler=configured_handler(_campaign_edit))

    p = campaign.add_parser(
        "preview",
        help="print the script as the campaign's first contacts would hear it",
    )
    p.add_argument("id", type=campaign_id_arg, metavar="ID")
    p.add_argument("--contacts", type=positive_arg, default=3, metavar="N", help="how many contacts (3)")
    p.add_argument("--twiml", action="store_true", help="print the TwiML document sent to the carrier")
    p.set_defaults(handler=configured_handler(_campaign_preview))
