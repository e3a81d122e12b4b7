"""Who answers a simulated call, and what they do: the callee behaviours.

A behaviour is a `Callee`, written in tests either as an object (`Callee.press("1")`)
or as a spec string (`"press:1"`), the form per-number scripts, the configuration's
default mix (`simulator.callees`) and `dialer simulator --script` use:

    listen                    stays on the line for the drawn call duration, presses nothing
    silent                    presses nothing; stays until the document ends
    press:KEYS[@S][,KEYS[@S]…] at each <Gather> in turn types KEYS, S simulated seconds
                              into the gather (default: one second after its prompt ends)
    hangup:S                  hangs up S simulated seconds into the script
    machine[:GREETING[:END]]  an answering machine: a greeting of GREETING seconds
                              (default 10), then END: beep (default), silence or other

See docs/carrier.md#callees for what each one does with each TwiML verb.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

CalleeKind = Literal["listen", "silent", "press", "hangup", "machine"]
MachineEnd = Literal["beep", "silence", "other"]

DEFAULT_GREETING_SECONDS = 10.0
_KEYS = re.compile(r"[0-9*#]+")
_MACHINE_ENDS: tuple[MachineEnd, ...] = ("beep", "silence", "other")


@dataclass(frozen=True)
class Press:
    """Keys typed at one <Gather>: `digits` all at once, `after` simulated seconds into
    the gather (None: one second after the gather's prompt has been spoken)."""

    digits: str
    after: float | None = None

    def spec(self) -> str:
        """The `KEYS[@S]` form."""
        return self.digits if self.after is None else f"{self.digits}@{_num(self.after)}"


@dataclass(frozen=True)
class Callee:
    """One callee behaviour (see the module docstring). Build with the class methods."""

    kind: CalleeKind
    presses: tuple[Press, ...] = ()
    hangup_after: float | None = None
    greeting: float = DEFAULT_GREETING_SECONDS
    machine_end: MachineEnd = "beep"

    @classmethod
    def listen(cls) -> Callee:
        """Today's answered human: on the line for the drawn duration, pressing nothing."""
        return cls("listen")

    @classmethod
    def silent(cls) -> Callee:
        """Presses nothing and stays until the document ends."""
        return cls("silent")

    @classmethod
    def press(cls, *keys: str | Press, after: float | None = None) -> Callee:
        """Types keys[0] at the first <Gather>, keys[1] at the second, …; then nothing.

        A plain string uses `after` (seconds into the gather; None = once its prompt
        has been spoken); a `Press` carries its own."""
        presses = tuple(k if isinstance(k, Press) else Press(k, after) for k in keys)
        callee = cls("press", presses=presses)
        callee.validate()
        return callee

    @classmethod
    def hangs_up(cls, after: float) -> Callee:
        """Hangs up `after` simulated seconds into the script, whatever is happening."""
        callee = cls("hangup", hangup_after=after)
        callee.validate()
        return callee

    @classmethod
    def machine(cls, greeting: float = DEFAULT_GREETING_SECONDS, end: MachineEnd = "beep") -> Callee:
        """An answering machine: `greeting` seconds of greeting, then a beep (or silence,
        or something else); records whatever is said after that."""
        callee = cls("machine", greeting=greeting, machine_end=end)
        callee.validate()
        return callee

    @property
    def is_machine(self) -> bool:
        """Whether this callee is an answering machine."""
        return self.kind == "machine"

    def validate(self) -> None:
        """Raise ValueError naming what is wrong with this behaviour."""
        if self.kind == "press":
            if not self.presses:
                raise ValueError("press needs at least one key")
            for press in self.presses:
                if not _KEYS.fullmatch(press.digits):
                    raise ValueError(f"press: keys must be 0-9, * or #, not {press.digits!r}")
                if press.after is not None and not _seconds_ok(press.after):
                    raise ValueError(f"press: @{press.after} is not a number of seconds ≥ 0")
        if self.kind == "hangup" and (self.hangup_after is None or not _seconds_ok(self.hangup_after)):
            raise ValueError(f"hangup needs a number of seconds ≥ 0, not {self.hangup_after!r}")
        if self.kind == "machine":
            if not _seconds_ok(self.greeting):
                raise ValueError(f"machine: greeting must be seconds ≥ 0, not {self.greeting!r}")
            if self.machine_end not in _MACHINE_ENDS:
                raise ValueError(f"machine: end must be beep, silence or other, not {self.machine_end!r}")

    def spec(self) -> str:
        """The spec string that parses back to this behaviour."""
        if self.kind == "press":
            return "press:" + ",".join(p.spec() for p in self.presses)
        if self.kind == "hangup":
            return f"hangup:{_num(self.hangup_after or 0)}"
        if self.kind == "machine":
            return f"machine:{_num(self.greeting)}:{self.machine_end}"
        return self.kind


def parse_callee(spec: str) -> Callee:
    """The Callee a spec string describes; ValueError naming the problem otherwise."""
    name, _, rest = spec.strip().partition(":")
    try:
        if name in ("listen", "silent") and not rest:
            return Callee(name)  # type: ignore[arg-type]  # narrowed by the test above
        if name == "press" and rest:
            return Callee.press(*(_parse_press(part) for part in rest.split(",")))
        if name == "hangup" and rest:
            return Callee.hangs_up(_seconds(rest))
        if name == "machine":
            greeting, _, end = rest.partition(":")
            return Callee.machine(
                _seconds(greeting) if greeting else DEFAULT_GREETING_SECONDS,
                end or "beep",  # type: ignore[arg-type]  # checked by validate()
            )
    except ValueError as exc:
        raise ValueError(f"callee {spec!r}: {exc}") from None
    raise ValueError(
        f"callee {spec!r}: expected listen, silent, press:KEYS[@S][,…], hangup:S or machine[:S[:END]]"
    )


def _parse_press(part: str) -> Press:
    digits, at, after = part.strip().partition("@")
    return Press(digits, _seconds(after) if at else None)


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not _seconds_ok(value):
        raise ValueError(f"{raw!r} is not a number of seconds ≥ 0")
    return value


def _seconds_ok(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
