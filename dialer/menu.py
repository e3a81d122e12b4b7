"""A campaign's keypad menu (`campaigns.menu`, docs/campaigns.md#menus): what each key
does, parsed and checked as a pure function.

The menu is a JSON object from one keypad key (`0`-`9`, `*`, `#`) to an entry:

    {"outcome": "confirmed", "say": "..."}      records the label, says `say`, hangs up
    {"action": "opt_out", "say": "..."}         records opted_out, do-not-call, hangs up
    {"action": "transfer", "to": "+E164", ...}  records transferred, connects the callee
    {"action": "repeat"}                        reads the script again

The SQL function `dialer_apply_key` (sql/0014) reads the same JSON to decide what a
key records; this module decides what the callee hears next (dialer/twiml.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from dialer import numbers
from dialer.errors import DialerError, TemplateError

KEYS: Final = frozenset("0123456789*#")
# Responses the daemon itself records; an `outcome` may not take them.
OPTED_OUT: Final = "opted_out"
TRANSFERRED: Final = "transferred"
NO_RESPONSE: Final = "no_response"
VOICEMAIL: Final = "voicemail"
RESERVED_RESPONSES: Final = frozenset({OPTED_OUT, TRANSFERRED, NO_RESPONSE, VOICEMAIL})
MAX_LABEL_CHARS: Final = 32
_LABEL: Final = re.compile(r"[a-z][a-z0-9_]*")
_FIELDS: Final = frozenset({"outcome", "action", "say", "to"})


class MenuError(DialerError):
    """A menu that is not a valid object of the documented shape; the message names
    the key and the problem."""


class Action(StrEnum):
    """What pressing a key does."""

    OUTCOME = "outcome"
    OPT_OUT = "opt_out"
    TRANSFER = "transfer"
    REPEAT = "repeat"


@dataclass(frozen=True)
class MenuEntry:
    """One key of a menu."""

    key: str
    action: Action
    say: str | None = None  # a template, like the script
    outcome: str | None = None  # the label, for Action.OUTCOME
    to: str | None = None  # E.164, for Action.TRANSFER

    @property
    def response(self) -> str | None:
        """What pressing this key records (None: nothing, the menu goes on)."""
        if self.action is Action.OUTCOME:
            return self.outcome
        if self.action is Action.OPT_OUT:
            return OPTED_OUT
        if self.action is Action.TRANSFER:
            return TRANSFERRED
        return None


@dataclass(frozen=True)
class Menu:
    """A parsed menu: its entries by key."""

    entries: Mapping[str, MenuEntry]

    def get(self, key: str) -> MenuEntry | None:
        """The entry of `key`, None when the menu lacks it."""
        return self.entries.get(key)

    @property
    def outcomes(self) -> frozenset[str]:
        """The labels its `outcome` entries record."""
        return frozenset(e.outcome for e in self.entries.values() if e.outcome is not None)

    @property
    def texts(self) -> list[tuple[str, str]]:
        """(key, say) of every entry that speaks, in key order."""
        return [(k, e.say) for k, e in sorted(self.entries.items()) if e.say is not None]


def parse_menu(raw: Any) -> Menu:
    """The menu `raw` (decoded JSON) describes; MenuError naming the first problem.

    Checks the shape only; `menu_problem` also checks the `say` templates."""
    if not isinstance(raw, dict):
        raise MenuError(f"must be a JSON object from keypad key to entry, not {_kind(raw)}")
    if not raw:
        raise MenuError("has no keys")
    entries: dict[str, MenuEntry] = {}
    for key, value in raw.items():
        if key not in KEYS:
            raise MenuError(f"key {key!r} is not one keypad key (0-9, * or #)")
        entries[key] = _entry(key, value)
    return Menu(entries)


def _entry(key: str, value: Any) -> MenuEntry:
    where = f"key {key!r}"
    if not isinstance(value, dict):
        raise MenuError(f"{where}: must be an object, not {_kind(value)}")
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        raise MenuError(f"{where}: unknown field {unknown[0]!r} (allowed: action, outcome, say, to)")
    say = value.get("say")
    if say is not None and not isinstance(say, str):
        raise MenuError(f"{where}: 'say' must be text, not {_kind(say)}")
    if "outcome" in value:
        if "action" in value:
            raise MenuError(f"{where}: has both 'outcome' and 'action'; an outcome is its own action")
        return MenuEntry(key, Action.OUTCOME, say=say, outcome=_label(where, value["outcome"]))
    if "action" not in value:
        raise MenuError(f"{where}: needs 'outcome' or 'action'")
    raw_action = value["action"]
    try:
        action = Action(raw_action) if isinstance(raw_action, str) else None
    except ValueError:
        action = None
    if action is None or action is Action.OUTCOME:
        raise MenuError(f"{where}: action {raw_action!r} is not one of opt_out, transfer, repeat")
    if action is Action.TRANSFER:
        return MenuEntry(key, action, say=say, to=_e164(where, value.get("to")))
    if "to" in value:
        raise MenuError(f"{where}: 'to' belongs to a transfer only")
    return MenuEntry(key, action, say=say)


def _label(where: str, label: Any) -> str:
    if not isinstance(label, str) or not _LABEL.fullmatch(label) or len(label) > MAX_LABEL_CHARS:
        raise MenuError(
            f"{where}: outcome {label!r} must be lowercase [a-z][a-z0-9_]*, "
            f"at most {MAX_LABEL_CHARS} characters"
        )
    if label in RESERVED_RESPONSES:
        reserved = ", ".join(sorted(RESERVED_RESPONSES))
        raise MenuError(f"{where}: outcome {label!r} is reserved ({reserved})")
    return label


def _e164(where: str, to: Any) -> str:
    if not isinstance(to, str) or not to:
        raise MenuError(f"{where}: a transfer needs 'to', an E.164 number")
    try:
        parsed = numbers.parse(to)
    except numbers.InvalidNumber as exc:
        raise MenuError(f"{where}: transfer to {to!r}: {exc}") from None
    if parsed.e164 != to:
        raise MenuError(f"{where}: transfer to {to!r} is not in E.164 form ({parsed.e164})")
    return to


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def menu_problem(raw: Any, validate_template: Callable[[str], None]) -> str | None:
    """Why `raw` is not a usable menu (shape, labels, numbers, `say` templates), or None.

    `validate_template` raises TemplateError for a text that cannot render (the
    script's own rules: dialer.twiml.validate_template)."""
    try:
        menu = parse_menu(raw)
    except MenuError as exc:
        return str(exc)
    for key, text in menu.texts:
        try:
            validate_template(text)
        except TemplateError as exc:
            return f"key {key!r} say: {str(exc).removeprefix('script_template: ')}"
    return None
