"""`dialer simulator`: serve the simulator standalone until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialer.carrier.simulator.core import check_outcome, start_simulator
from dialer.carrier.simulator.records import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN
from dialer.errors import ConfigError

if TYPE_CHECKING:
    from dialer.config import Settings


def load_script(path: Path) -> dict[str, list[str]]:
    """A `--script` file: a JSON object mapping a number to its list of outcomes or
    callee specs (`{"+34911000001": ["busy", "press:1"]}`), as `Simulator.script`
    takes them. ConfigError naming the file (and the number) if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"simulator script {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"simulator script {path}: expected a JSON object of number → list of outcomes")
    script: dict[str, list[str]] = {}
    for number, outcomes in data.items():
        if not isinstance(outcomes, list) or not outcomes or not all(isinstance(o, str) for o in outcomes):
            raise ConfigError(f"simulator script {path}: {number}: expected a non-empty list of strings")
        for outcome in outcomes:
            try:
                check_outcome(outcome)
            except ValueError as exc:
                raise ConfigError(f"simulator script {path}: {number}: {exc}") from None
        script[number] = outcomes
    return script


async def _serve(settings: Settings, host: str, port: int, script: dict[str, list[str]]) -> None:
    running = await start_simulator(
        settings.simulator,
        account_sid=settings.twilio.account_sid or SIMULATOR_ACCOUNT_SID,
        auth_token=settings.twilio.auth_token.get_secret_value() or SIMULATOR_AUTH_TOKEN,
        host=host,
        port=port,
    )
    for number, outcomes in script.items():
        running.simulator.script(number, outcomes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"simulator listening on {running.url} (set twilio.api_base_url to it)", flush=True)
    try:
        await stop.wait()
    finally:
        await running.stop()


def _run(args: argparse.Namespace, settings: Settings) -> int:
    script = load_script(Path(args.script)) if args.script else {}
    asyncio.run(_serve(settings, args.host, args.port, script))
    return 0


def register_cli(sub: Any) -> None:
    """Add `dialer simulator [--host H] [--port N] [--script FILE]` to the CLI's subparsers."""
    p = sub.add_parser("simulator", help="serve the Twilio-compatible carrier simulator")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8089, help="port to listen on (default 8089)")
    p.add_argument(
        "--script",
        metavar="FILE",
        help='JSON {"+34911000001": ["busy", "press:1"], …}: outcomes or callee specs per number',
    )
    p.set_defaults(handler=_run)
