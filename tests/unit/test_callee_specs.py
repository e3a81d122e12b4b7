"""Callee behaviours as written in scripts, settings and `dialer simulator --script`:
what parses, what is refused, and that a refusal names the culprit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from dialer.carrier.simulator import Callee, Press, Simulator, parse_callee
from dialer.carrier.simulator.cli import load_script
from dialer.cli import build_parser
from dialer.config import SimulatorSettings, load_settings
from dialer.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "callee"),
    [
        ("listen", Callee.listen()),
        ("silent", Callee.silent()),
        ("press:1", Callee.press("1")),
        ("press:*,1", Callee.press("*", "1")),
        ("press:*@2,1@0.5", Callee.press(Press("*", 2), Press("1", 0.5))),
        ("press:12#", Callee.press("12#")),
        ("hangup:4", Callee.hangs_up(4)),
        ("machine", Callee.machine()),
        ("machine:8", Callee.machine(8)),
        ("machine:8:silence", Callee.machine(8, "silence")),
    ],
)
def test_specs_parse_and_round_trip(spec: str, callee: Callee) -> None:
    """Each spec form parses to the Callee its builder makes, and spec() parses back."""
    assert parse_callee(spec) == callee
    assert parse_callee(callee.spec()) == callee


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("press:a", "keys must be 0-9, * or #"),
        ("press:", "expected listen"),
        ("press:1@-1", "seconds ≥ 0"),
        ("hangup:soon", "not a number of seconds"),
        ("machine:5:fax", "beep, silence or other"),
        ("shout", "expected listen"),
    ],
)
def test_bad_specs_are_refused_by_name(spec: str, says: str) -> None:
    """A bad spec raises ValueError quoting the spec and what is wrong with it."""
    with pytest.raises(ValueError, match="callee") as caught:
        parse_callee(spec)
    assert repr(spec) in str(caught.value) and says in str(caught.value)


def test_script_refuses_unknown_outcomes_at_once() -> None:
    """Simulator.script checks every outcome when it is given, not at the next dial."""
    sim = Simulator(SimulatorSettings(), account_sid="AC" + "0" * 32, auth_token="t")
    sim.script(
        "+34911000001", ["busy", "press:*,1", Callee.machine(3), "error:429", "accept-then-hang:silent"]
    )
    for bad in ("presss:1", "error:x", "accept-then-hang:nope", "accept-then-hangs"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            sim.script("+34911000001", [bad])


def test_settings_callees_are_validated(tmp_path: Path) -> None:
    """`simulator.callees` in the configuration: a bad spec or weight is a ConfigError
    naming it; a good mix loads."""
    good = tmp_path / "good.toml"
    good.write_text('[simulator.callees]\n"press:1" = 3\nsilent = 1\n')
    assert load_settings(good).simulator.callees == {"press:1": 3, "silent": 1}
    bad = tmp_path / "bad.toml"
    bad.write_text('[simulator.callees]\n"press:x" = 1\n')
    with pytest.raises(ConfigError, match="press:x"):
        load_settings(bad)
    with pytest.raises(ValidationError, match="weight"):
        SimulatorSettings(callees={"silent": -1})


def test_script_file_for_the_cli(tmp_path: Path) -> None:
    """`dialer simulator --script FILE`: a JSON object of number → outcomes loads; a
    bad file is a ConfigError naming the file and the number."""
    f = tmp_path / "script.json"
    f.write_text(json.dumps({"+34911000001": ["busy", "press:1"], "+34911000002": ["machine:6"]}))
    assert load_script(f) == {"+34911000001": ["busy", "press:1"], "+34911000002": ["machine:6"]}
    assert build_parser().parse_args(["simulator", "--script", str(f)]).script == str(f)
    f.write_text(json.dumps({"+34911000003": ["press:z"]}))
    with pytest.raises(ConfigError, match=r"script.json: \+34911000003: callee 'press:z'"):
        load_script(f)
    f.write_text("{not json")
    with pytest.raises(ConfigError, match=r"script\.json"):
        load_script(f)
    f.write_text(json.dumps({"+34911000004": "busy"}))
    with pytest.raises(ConfigError, match="non-empty list"):
        load_script(f)
