"""The operator's subcommands: `contacts`, `campaign`, `dnc`, `calls`, `blackout` and
`db`, one module per group (`contacts.py` also holds `dnc`; `results.py` holds
`campaign export` and `calls`; `blackout.py` the blackout days; `rules.py` the
calling-rule presets of `campaign create`; `db.py` holds `db shell` and `db url`),
what they share in `common.py`.

Each handler opens one connection, calls a store (all SQL lives in dialer.store),
and prints. Steering a campaign only writes `campaigns.status`; the daemon hears of it
through the NOTIFY trigger on that column. Exit codes: 0 ok, 1 the command failed
(refused transition, unknown id, unreadable file), 2 usage, 3 an import that
rejected rows (docs/operations.md#contact-import).
"""

from __future__ import annotations

from typing import Any

from dialer.operator import blackout, campaigns, contacts, db, edit, results
from dialer.operator.common import TRANSITIONS, CommandFailed, UsageError, open_campaign, steer

__all__ = ["TRANSITIONS", "CommandFailed", "UsageError", "open_campaign", "register_cli", "steer"]


def register_cli(sub: Any) -> None:
    """Add the `contacts`, `campaign`, `dnc`, `calls`, `blackout` and `db` subcommands
    to the `dialer` parser."""
    group = sub.add_parser("contacts", help="load contacts")
    contacts_sub = group.add_subparsers(dest="contacts_command", metavar="COMMAND", required=True)
    group = sub.add_parser("campaign", help="create, steer and follow campaigns")
    campaign_sub = group.add_subparsers(dest="campaign_command", metavar="COMMAND", required=True)
    group = sub.add_parser("dnc", help="the do-not-call list")
    dnc_sub = group.add_subparsers(dest="dnc_command", metavar="COMMAND", required=True)
    group = sub.add_parser("blackout", help="days nobody is called, for one campaign or all")
    blackout_sub = group.add_subparsers(dest="blackout_command", metavar="COMMAND", required=True)
    contacts.register(contacts_sub, dnc_sub)
    campaigns.register(campaign_sub)
    results.register(campaign_sub, sub)
    blackout.register(blackout_sub)
    edit.register(campaign_sub)
    db.register_cli(sub)
