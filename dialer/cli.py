"""The `dialer` command: parses arguments, loads the configuration, and hands each
subcommand to the module that owns it. Exit codes: 0 ok, 1 failure, 2 usage or
configuration error. Errors go to stderr as one clear line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from dialer import __version__
from dialer.config import Settings, load_settings
from dialer.errors import ConfigError, DialerError
from dialer.logs import configure_logging, url_secrets
from dialer.text import printable

Handler = Callable[[argparse.Namespace, Settings], int]


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from dialer import database, migrate

    def applied(m: migrate.Migration) -> None:
        print(f"applied {m.path.name}", flush=True)

    async def go(url: str) -> list[migrate.Migration]:
        async with database.connection(url, settings.database, application_name=database.APP_MIGRATE) as conn:
            return await migrate.migrate(conn, on_applied=applied)

    with database.database_endpoints(settings.database) as endpoints:
        if not asyncio.run(go(endpoints.url)):
            print("nothing to apply: the schema is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each module adds its own subcommands."""
    parser = argparse.ArgumentParser(
        prog="dialer", description="Outbound voice-call campaigns through Twilio, run from PostgreSQL."
    )
    parser.add_argument("--version", action="version", version=f"dialer {__version__}")
    parser.add_argument(
        "--config", help="config file (default: $DIALER_CONFIG, ./config.toml, /etc/dialer/config.toml)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("migrate", help="apply pending database migrations")
    p.set_defaults(handler=_migrate)
    # Each subcommand module adds its own parsers; imported here, not at the top, so
    # that `dialer --help` stays fast and `dialer migrate` needs nothing else.
    from dialer import demo, operator, service
    from dialer.carrier import simulator
    from dialer.console import cli as console

    for module in (service, simulator, operator, demo, console):
        module.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dialer` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    secrets = [
        settings.twilio.auth_token.get_secret_value(),
        *url_secrets(settings.database.url.get_secret_value()),
        *url_secrets(settings.database.listen_url.get_secret_value()),
    ]
    configure_logging(settings.logging.level, settings.logging.format, secrets=secrets, stream=sys.stderr)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except DialerError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
