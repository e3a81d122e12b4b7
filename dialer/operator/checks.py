"""A campaign checked when it is written (`campaign create`, `edit`) and when it is
started, by the same pure function the daemon uses before dialing
(`validation.campaign_problems`): a script the daemon would refuse is refused here,
with the reason, instead of being discovered later in `campaign status`.

Only a missing caller id is a warning rather than a refusal: the daemon may have a
`twilio.from_number` in a configuration this command does not read. Placeholders
(`{{custom.KEY}}`) that some contacts have no value for are warnings too, with how
many: those contacts would hear nothing there.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dialer import twiml
from dialer.config import Settings
from dialer.models import Campaign
from dialer.operator.common import CommandFailed
from dialer.store.base import utcnow
from dialer.store.campaigns import CampaignStore
from dialer.text import printable
from dialer.validation import NO_CALLER_ID, campaign_problems


@dataclass(frozen=True)
class Verdict:
    """What a check found: errors refuse the command, warnings are printed."""

    errors: list[str]
    warnings: list[str]


async def check_campaign(
    store: CampaignStore, campaign: Campaign, settings: Settings, *, with_contacts: bool = True
) -> Verdict:
    """The campaign as the daemon would judge it now, and (with_contacts) how many of
    its contacts lack a value a `{{custom.KEY}}` of its script reads."""
    problems = campaign_problems(
        campaign,
        utcnow(),
        known_zones=await store.known_zones(),
        validate_template=twiml.validate_template,
        default_from_number=settings.twilio.from_number,
    )
    errors = [p for p in problems if p != NO_CALLER_ID]
    warnings = []
    if NO_CALLER_ID in problems:
        warnings.append(
            "no caller id: the daemon dials nothing unless its twilio.from_number is set "
            "(or give --caller-id)"
        )
    if with_contacts and not errors:
        keys = twiml.custom_keys(campaign.script_template)
        if keys:
            warnings += missing_fields(keys, await store.custom_key_sets(campaign.id))
    return Verdict(errors=errors, warnings=warnings)


def missing_fields(keys: Sequence[str], key_sets: Sequence[tuple[list[str], int]]) -> list[str]:
    """One warning per `{{custom.KEY}}` that some contacts have no value for."""
    total = sum(n for _, n in key_sets)
    present = [({twiml.field_key(k) for k in names}, n) for names, n in key_sets]
    warnings = []
    for key in keys:
        wanted = twiml.field_key(key)
        missing = sum(n for names, n in present if wanted not in names)
        if missing:
            warnings.append(
                f"{{{{custom.{key}}}}} has no value for {missing} of {total} contacts: "
                "they would hear nothing there"
            )
    return warnings


def missing_keys(keys: Sequence[str], values: Mapping[str, Any]) -> list[str]:
    """The keys (as the script writes them) that `values` holds nothing for."""
    present = {twiml.field_key(k) for k, v in values.items() if v is not None and str(v).strip()}
    return [key for key in keys if twiml.field_key(key) not in present]


def enforce(verdict: Verdict, action: str) -> None:
    """Print the warnings (stderr); raise CommandFailed with every error."""
    for warning in verdict.warnings:
        print(f"warning: {printable(warning)}", file=sys.stderr)
    if verdict.errors:
        raise CommandFailed(f"{action}: " + "; ".join(verdict.errors))
