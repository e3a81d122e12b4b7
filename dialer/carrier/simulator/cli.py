"""`dialer simulator`: serve the simulator standalone until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING, Any

from dialer.carrier.simulator.core import start_simulator
from dialer.carrier.simulator.records import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN

if TYPE_CHECKING:
    from dialer.config import Settings


async def _serve(settings: Settings, host: str, port: int) -> None:
    running = await start_simulator(
        settings.simulator,
        account_sid=settings.twilio.account_sid or SIMULATOR_ACCOUNT_SID,
        auth_token=settings.twilio.auth_token.get_secret_value() or SIMULATOR_AUTH_TOKEN,
        host=host,
        port=port,
    )
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
    asyncio.run(_serve(settings, args.host, args.port))
    return 0


def register_cli(sub: Any) -> None:
    """Add `dialer simulator [--host H] [--port N]` to the CLI's subparsers."""
    p = sub.add_parser("simulator", help="serve the Twilio-compatible carrier simulator")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8089, help="port to listen on (default 8089)")
    p.set_defaults(handler=_run)
