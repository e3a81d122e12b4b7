"""Keypad menus (docs/campaigns.md#menus): the shape parsed and checked as a pure
function, and a bad menu or voicemail text as a campaign's last_error."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

import pytest

from dialer.menu import Action, MenuError, menu_problem, parse_menu
from dialer.models import Campaign, CampaignStatus
from dialer.twiml import validate_template
from dialer.validation import campaign_problem

EXAMPLE = {
    "1": {"outcome": "confirmed", "say": "Gracias {{first_name}}, su cita queda confirmada."},
    "2": {"outcome": "declined", "say": "Entendido, anulamos su cita."},
    "0": {"action": "transfer", "to": "+34910000000", "say": "Le pasamos con recepción."},
    "9": {"action": "opt_out", "say": "No volveremos a llamarle."},
    "*": {"action": "repeat"},
}


def test_the_documented_example_parses() -> None:
    """The example of docs/campaigns.md is a valid menu: each key's action, label, number and text."""
    menu = parse_menu(EXAMPLE)
    assert {k: e.action for k, e in menu.entries.items()} == {
        "1": Action.OUTCOME,
        "2": Action.OUTCOME,
        "0": Action.TRANSFER,
        "9": Action.OPT_OUT,
        "*": Action.REPEAT,
    }
    assert {k: e.response for k, e in menu.entries.items()} == {
        "1": "confirmed",
        "2": "declined",
        "0": "transferred",
        "9": "opted_out",
        "*": None,
    }
    assert menu.outcomes == {"confirmed", "declined"}
    assert menu.get("0") is not None and menu.get("0").to == "+34910000000"  # type: ignore[union-attr]
    assert menu.get("5") is None
    assert menu_problem(EXAMPLE, validate_template) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"1": {}}], "must be a JSON object"),
        ("1=confirmed", "must be a JSON object"),
        ({}, "has no keys"),
        ({"10": {"outcome": "x"}}, "key '10' is not one keypad key"),
        ({"a": {"outcome": "x"}}, "key 'a' is not one keypad key"),
        ({"1": "confirmed"}, "key '1': must be an object, not text"),
        ({"1": {"outcome": "ok", "sya": "typo"}}, "unknown field 'sya'"),
        ({"1": {"outcome": "ok", "action": "repeat"}}, "both 'outcome' and 'action'"),
        ({"1": {"say": "hello"}}, "needs 'outcome' or 'action'"),
        ({"1": {"outcome": "Confirmed"}}, "must be lowercase"),
        ({"1": {"outcome": "1st"}}, "must be lowercase"),
        ({"1": {"outcome": "a" * 33}}, "at most 32 characters"),
        ({"1": {"outcome": 1}}, "must be lowercase"),
        ({"1": {"outcome": "opted_out"}}, "'opted_out' is reserved"),
        ({"1": {"outcome": "no_response"}}, "is reserved"),
        ({"1": {"outcome": "voicemail"}}, "is reserved"),
        ({"1": {"outcome": "transferred"}}, "is reserved"),
        ({"1": {"action": "hangup"}}, "action 'hangup' is not one of"),
        ({"1": {"action": "outcome"}}, "is not one of"),
        ({"1": {"action": ["repeat"]}}, "is not one of"),
        ({"0": {"action": "transfer"}}, "a transfer needs 'to'"),
        ({"0": {"action": "transfer", "to": "910000000"}}, "transfer to '910000000'"),
        ({"0": {"action": "transfer", "to": "+34 910 000 000"}}, "not in E.164 form (+34910000000)"),
        ({"0": {"action": "transfer", "to": "+3491"}}, "transfer to '+3491'"),
        ({"9": {"action": "opt_out", "to": "+34910000000"}}, "'to' belongs to a transfer only"),
        ({"1": {"outcome": "ok", "say": 5}}, "'say' must be text"),
    ],
)
def test_a_bad_menu_is_refused_naming_the_key_and_the_problem(raw: Any, message: str) -> None:
    """Every way a menu can be wrong is a MenuError whose message says where and what."""
    with pytest.raises(MenuError, match=None) as caught:
        parse_menu(raw)
    assert message in str(caught.value)
    assert menu_problem(raw, validate_template) == str(caught.value)


def test_say_texts_follow_the_scripts_placeholder_rules() -> None:
    """An unknown placeholder in a `say` text is a problem naming the key."""
    raw = {"1": {"outcome": "ok", "say": "Gracias {{nombre}}"}, "2": {"outcome": "no", "say": "{{custom.x}}"}}
    problem = menu_problem(raw, validate_template)
    assert problem == "key '1' say: unknown placeholder '{{nombre}}'"


def _campaign(**fields: Any) -> Campaign:
    base = Campaign(
        id=uuid.uuid4(),
        name="citas",
        status=CampaignStatus.ACTIVE,
        script_template="Hola {{first_name}}, pulse 1 para confirmar.",
        caller_id="+34910000000",
        timezone="Europe/Madrid",
        schedule_start=None,
        schedule_end=None,
        calling_hours_start=None,
        calling_hours_end=None,
        calling_days=None,
        max_retries=2,
        retry_delay_minutes=60,
        max_concurrent_calls=None,
        machine_detection=True,
        machine_is_failure=False,
        record_calls=False,
        ring_timeout_seconds=30,
        time_limit_seconds=600,
        last_error=None,
        menu=EXAMPLE,
    )
    return dataclasses.replace(base, **fields)


def _problem(c: Campaign) -> str | None:
    return campaign_problem(
        c,
        datetime(2026, 11, 25, 12, 0),
        known_zones={"Europe/Madrid"},
        validate_template=validate_template,
        default_from_number="",
    )


def test_a_valid_menu_campaign_can_be_dialed() -> None:
    """The example menu, a voicemail text and a language leave no problem."""
    assert (
        _problem(_campaign(voicemail_template="Hola {{first_name}}, le llamamos.", language="es-ES")) is None
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"menu": ["1"]}, "menu: must be a JSON object from keypad key to entry, not a list"),
        (
            {"menu": {"0": {"action": "transfer", "to": "0034910000000"}}},
            "menu: key '0': transfer to '0034910000000'",
        ),
        (
            {"menu": {"1": {"outcome": "ok", "say": "{{x}}"}}},
            "menu: key '1' say: unknown placeholder '{{x}}'",
        ),
        ({"voicemail_template": "Hola {{nombre}}"}, "voicemail_template: unknown placeholder '{{nombre}}'"),
    ],
)
def test_a_bad_menu_or_voicemail_is_the_campaigns_last_error(fields: dict[str, Any], expected: str) -> None:
    """campaign_problem names the menu or voicemail problem, so the campaign is not dialed."""
    problem = _problem(_campaign(**fields))
    assert problem is not None and problem.startswith(expected), problem
