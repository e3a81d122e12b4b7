"""`dialer console hash-password`: the value for `console.password_hash`.

The password is read without echo from the terminal (asked twice), or as one line
from standard input when that is not a terminal (`… < file`, a pipe), and never
from the command line, where `ps` and shell history would keep it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from dialer.config import Settings
from dialer.console.passwords import hash_password

MIN_PASSWORD_CHARS = 12


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("console password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("error: the two passwords differ")
    return first


def _hash_password(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password()
    if len(password) < MIN_PASSWORD_CHARS:
        print(f"error: the password must be at least {MIN_PASSWORD_CHARS} characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def register_cli(sub: Any) -> None:
    """Add `dialer console hash-password`."""
    console = sub.add_parser("console", help="the operator console (docs/console.md)")
    csub = console.add_subparsers(dest="console_command", metavar="COMMAND", required=True)
    p = csub.add_parser(
        "hash-password",
        help="print a console.password_hash for a password read from the terminal or stdin",
    )
    p.set_defaults(handler=_hash_password)
