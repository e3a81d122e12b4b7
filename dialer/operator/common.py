"""What every operator subcommand shares: the errors that set the exit code, the
argument types, running a command on one connection, the console to print on, and
the campaign checks the CLI and the console both use."""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path

import structlog
from rich.console import Console

from dialer import database, numbers
from dialer.config import Settings
from dialer.database import Connection
from dialer.errors import DialerError
from dialer.models import Campaign, CampaignStatus
from dialer.store.campaigns import FINAL_CAMPAIGN_STATUSES, CampaignStore, TransitionRefused
from dialer.text import printable

log = structlog.get_logger("dialer.operator")

Work = Callable[[Connection], Awaitable[int]]
Command = Callable[[argparse.Namespace, Connection], Awaitable[int]]
# A command that also reads the configuration (the default time zone, the instance timeout).
ConfiguredCommand = Callable[[argparse.Namespace, Connection, Settings], Awaitable[int]]

# What each steering command offers: (the statuses a screen offers it from, the
# status it sets). Whether a change is allowed is decided by the database alone
# (sql/0010, docs/invariants.md#7); this only says which buttons a screen shows, and
# tests/integration/test_status_transitions.py checks each pair is one it allows.
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


@dataclass(frozen=True)
class CampaignRef:
    """A campaign as the operator named it on the command line: its id, any unique
    prefix of its id, or its exact name. `command_handler` replaces every CampaignRef
    in the parsed arguments by the campaign's UUID before the command runs, so a
    command (whoever wrote it) only ever sees a uuid.UUID."""

    text: str


def campaign_id_arg(text: str) -> CampaignRef | uuid.UUID:
    """A full UUID as is (the command reports it when no such campaign exists);
    anything else is looked up by id prefix or exact name when the command runs."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a campaign id, id prefix or name cannot be empty")
    try:
        return uuid.UUID(text)
    except ValueError:
        return CampaignRef(text)


def hours_arg(text: str) -> tuple[time, time]:
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


def days_arg(text: str) -> list[int]:
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


def zone_arg(text: str) -> str:
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown IANA time zone {text!r} (e.g. Europe/Madrid)") from None
    return text


def caller_id_arg(text: str) -> str:
    if not text.startswith("+"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an E.164 number (write +<country><number>)")
    try:
        return numbers.parse(text).e164
    except numbers.InvalidNumber as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def timestamp_arg(text: str) -> datetime:
    """An ISO 8601 time, with or without an offset (`to_utc` decides what a time
    without one means)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2025-03-01T09:00+01:00)"
        ) from None


def to_utc(value: datetime, zone: str, option: str) -> datetime:
    """The naive UTC time the schema stores for `value`: a time with an offset is
    converted; a time without one is a wall-clock time in `zone` (the campaign's),
    refused when that clock skips it (a DST gap) or shows it twice (the hour a DST
    change repeats) — an ambiguous schedule is not guessed."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    tz = zoneinfo.ZoneInfo(zone)
    first, second = value.replace(tzinfo=tz, fold=0), value.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        problem = "occurs twice" if first.astimezone(UTC) < second.astimezone(UTC) else "does not exist"
        raise UsageError(
            f"{option} {value:%Y-%m-%d %H:%M} {problem} in {zone} (a daylight-saving change): "
            "give it with an offset, e.g. 2025-03-30T03:30+02:00"
        )
    return first.astimezone(UTC).replace(tzinfo=None)


def non_negative_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def positive_arg(text: str) -> int:
    value = non_negative_arg(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def rate_arg(text: str) -> float:
    """Calls per second: a positive number (fractions allowed: 0.5 is one call every 2 s)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of calls per second")
    return value


def script_arg(text: str) -> str:
    if not text.startswith("@"):
        return text
    try:
        return Path(text[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read script file {text[1:]}: {exc}") from None


def region_arg(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a two-letter country code such as ES or US")
    return text.upper()


# ---------------------------------------------------------------- plumbing


async def resolve_campaign(conn: Connection, ref: CampaignRef) -> uuid.UUID:
    """The one campaign whose exact name is `ref.text` or whose id starts with it;
    CommandFailed naming the candidates when there are several, or none."""
    found = await CampaignStore(conn).find(ref.text)
    if len(found) == 1:
        return found[0].id
    shown = ref.text
    if not found:
        raise CommandFailed(f"no campaign has the id, id prefix or name {shown!r} (see `campaign list`)")
    # One line (the CLI prints errors on one): every candidate's full id, status and name.
    candidates = "; ".join(f"{c.id} ({c.status}, {c.name!r})" for c in found)
    raise CommandFailed(f"{shown!r} matches {len(found)} campaigns: {candidates} — give more of the id")


async def _resolve_refs(args: argparse.Namespace, conn: Connection) -> None:
    for name, value in vars(args).items():
        if isinstance(value, CampaignRef):
            setattr(args, name, await resolve_campaign(conn, value))


def run(settings: Settings, work: Work) -> int:
    """Run `work` on one connection to the configured (or embedded) database."""

    async def go(url: str) -> int:
        async with database.connection(url, settings.database, application_name=database.APP_CLI) as conn:
            return await work(conn)

    # A database failure leaves the store (or the connection's block) as
    # DatabaseUnavailable, whose one line the CLI prints (exit 1); a missing schema
    # says to run `dialer migrate`.
    with database.database_endpoints(settings.database) as endpoints:
        return asyncio.run(go(endpoints.url))


def configured_handler(work: ConfiguredCommand) -> Callable[[argparse.Namespace, Settings], int]:
    """Adapt `async (args, conn, settings) -> int` to the CLI's `(args, settings) ->
    int`: campaign references resolved to ids first, UsageError turned into exit 2."""

    async def resolved(args: argparse.Namespace, conn: Connection, settings: Settings) -> int:
        await _resolve_refs(args, conn)
        return await work(args, conn, settings)

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return run(settings, lambda conn: resolved(args, conn, settings))
        except UsageError as exc:
            print(f"error: {printable(str(exc))}", file=sys.stderr)
            return 2

    return handler


def command_handler(work: Command) -> Callable[[argparse.Namespace, Settings], int]:
    """Like `configured_handler`, for a command that needs no configuration."""
    return configured_handler(lambda args, conn, _settings: work(args, conn))


def make_console() -> Console:
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


async def steer(
    store: CampaignStore,
    campaign_id: uuid.UUID,
    command: str,
    *,
    before_activation: Callable[[Campaign], Awaitable[None]] | None = None,
) -> str:
    """Apply a steering command (start, pause, resume, cancel) and return the status
    now; CommandFailed with the database's reason when the change is refused (the one
    rule lives there, docs/invariants.md#7). A campaign already in the target status
    is left as it is. The CLI and the console both steer through here.
    `before_activation` sees a draft or paused campaign before it becomes active (the
    CLI checks it, operator/checks.py) and may refuse by raising CommandFailed."""
    _, target = TRANSITIONS[command]
    if before_activation is not None and target == CampaignStatus.ACTIVE:
        campaign = await store.get(campaign_id)
        if campaign is not None and campaign.status in (CampaignStatus.DRAFT, CampaignStatus.PAUSED):
            await before_activation(campaign)
    try:
        change = await store.set_status(campaign_id, target)
    except TransitionRefused as exc:
        raise CommandFailed(str(exc)) from None
    if change is None:
        raise CommandFailed(f"no campaign with id {campaign_id}")
    if change.changed:
        log.debug("campaign_status_set", campaign_id=str(campaign_id), status=target, command=command)
    return target


def e164(text: str, region: str | None) -> str:
    try:
        return numbers.parse(text, region).e164
    except numbers.InvalidNumber as exc:
        raise UsageError(str(exc)) from None


def add_region(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--default-region",
        type=region_arg,
        metavar="CC",
        help="country (ISO 3166, e.g. ES) of numbers written without +<country code>",
    )
