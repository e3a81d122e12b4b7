"""`dialer demo`: a whole campaign on a fresh machine with no configuration.

It starts a PostgreSQL of its own (under `database.data_dir/demo`, never the
configured database), the real daemon with the in-process carrier simulator, imports
a CSV of generated contacts through the same importer operators use, starts the
campaign by writing its status, shows live progress until the daemon marks it
completed, and prints the summary. Every call goes the production way: the twilio
package → HTTP → simulator → signed callbacks → webhooks → PostgreSQL.

The campaign is an appointment reminder in Spanish with a keypad menu
(docs/campaigns.md#menus): the simulator's callees confirm, cancel, ask for
reception, opt out, press nothing, hang up or are answering machines that get the
voicemail message, and the progress view shows their responses arriving.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from dialer import database
from dialer.config import ConsoleSettings, Settings
from dialer.embedded import EmbeddedPostgres
from dialer.importer import import_csv
from dialer.logs import configure_logging
from dialer.loopback import is_loopback_host
from dialer.models import CampaignStatus
from dialer.progress import render_progress, responses_line, watch
from dialer.service import Daemon
from dialer.store.campaigns import CampaignProgress, CampaignStore, NewCampaign
from dialer.store.contacts import DoNotCallStore
from dialer.text import markup_safe

DEMO_DATABASE = "dialer_demo"
CALLER_ID = "+34910000000"
RECEPTION = "+34910000099"
CAMPAIGN_NAME = "Recordatorio de citas (demo)"
SCRIPT = (
    "Hola {{first_name}}, le llamamos de Clínica Demo para recordarle su cita del "
    "{{custom.fecha}} a las {{custom.hora}}. Pulse 1 para confirmarla, 2 para anularla, "
    "0 para hablar con recepción, 9 si no desea recibir más llamadas, o asterisco para "
    "escuchar este mensaje de nuevo."
)
MENU = {
    "1": {"outcome": "confirmed", "say": "Gracias {{first_name}}, su cita queda confirmada."},
    "2": {"outcome": "declined", "say": "Entendido, anulamos su cita. Hasta pronto."},
    "0": {"action": "transfer", "to": RECEPTION, "say": "Le pasamos con recepción."},
    "9": {"action": "opt_out", "say": "No volveremos a llamarle. Disculpe las molestias."},
    "*": {"action": "repeat"},
}
VOICEMAIL = (
    "Hola {{first_name}}, le llamábamos de Clínica Demo para recordarle su cita del "
    "{{custom.fecha}} a las {{custom.hora}}. Si necesita cambiarla, llámenos. Gracias."
)
# Who answers the demo's calls (the simulator's callee mix, docs/carrier.md#callees);
# answering machines come from the simulator's `machine` outcome weight.
CALLEES = {
    "press:1": 55.0,
    "press:2": 10.0,
    "press:*,1": 6.0,
    "press:0": 3.0,
    "press:9": 4.0,
    "silent": 12.0,
    "hangup:4": 6.0,
}
FIRST = [
    "Ana",
    "Luis",
    "María",
    "Jorge",
    "Lucía",
    "Pablo",
    "Carmen",
    "Diego",
    "Elena",
    "Javier",
    "Sofía",
    "Marta",
    "Raúl",
    "Nuria",
    "Iván",
    "Laura",
    "Óscar",
    "Irene",
    "Hugo",
    "Paula",
]
LAST = [
    "García",
    "Martínez",
    "López",
    "Sánchez",
    "Pérez",
    "Gómez",
    "Martín",
    "Jiménez",
    "Ruiz",
    "Hernández",
    "Díaz",
    "Moreno",
    "Álvarez",
    "Romero",
    "Navarro",
    "O'Brien",
    "Torres",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_contacts_csv(path: Path, count: int, rng: random.Random) -> list[str]:
    """Generated contacts in the CSV shape operators import; returns their numbers.
    Two rows are deliberately bad, to show how the importer reports them."""
    numbers: list[str] = []
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["first_name", "last_name", "phone_number", "email", "fecha", "hora"])
        for i in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            number = f"+34 91 {100 + i // 10000:03d} {i % 10000:04d}"
            numbers.append(number.replace(" ", ""))
            day, hour, minute = rng.randint(1, 28), rng.randint(9, 19), rng.choice((0, 15, 30, 45))
            email = f"{first.lower()}.{i}@example.com"
            out.writerow([first, last, number, email, f"{day} de diciembre", f"{hour}:{minute:02d}"])
        out.writerow(["Bad", "Number", "12345", "", "1 de diciembre", "10:00"])
        out.writerow(["No", "Country", "+999 1234", "", "2 de diciembre", "11:00"])
    return numbers


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def demo_settings(settings: Settings, port: int) -> Settings:
    """The configured settings, with what the demo needs: its own port, the
    in-process simulator, a caller id, a pace that finishes in well under a
    minute, and the console open on loopback (the configured port when it is free)."""
    console_port = settings.console.port if _port_free(settings.console.port) else _free_port()
    return settings.model_copy(
        update={
            "console": ConsoleSettings(host="127.0.0.1", port=console_port, refresh_seconds=0.5),
            "http": settings.http.model_copy(update={"port": port, "public_url": f"http://127.0.0.1:{port}"}),
            "carrier": settings.carrier.model_copy(update={"kind": "simulator"}),
            "twilio": settings.twilio.model_copy(
                update={"api_base_url": "https://api.twilio.com", "from_number": CALLER_ID}
            ),
            "simulator": settings.simulator.model_copy(
                update={
                    "time_scale": 0.02,
                    "max_latency_ms": 200,
                    "callees": settings.simulator.callees or CALLEES,
                }
            ),
            "dialer": settings.dialer.model_copy(
                update={
                    "calls_per_second": 25.0,
                    "bucket_size": 5,
                    "max_concurrent_calls": 40,
                    "tick_seconds": 0.25,
                }
            ),
        }
    )


async def run_demo(
    settings: Settings, contacts: int, seed: int | None, console: Console, *, linger: bool = False
) -> int:
    """Run the demo to the end (and, with `linger`, keep everything up until Ctrl-C or
    SIGTERM); returns the exit code."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    warn_if_exposed(settings, console)
    server = EmbeddedPostgres(settings.database.data_dir / "demo")
    console.print(f"[bold]dialer demo[/]: starting PostgreSQL under {markup_safe(str(server.data_dir))}")
    server_url = await asyncio.to_thread(server.start)
    try:
        await database.recreate_database(server_url, DEMO_DATABASE)
        db_url = server.url_for(DEMO_DATABASE)
        daemon = Daemon(demo_settings(settings, _free_port()), db_url=db_url)
        await daemon.start()
        try:
            if daemon.console is not None:
                url = markup_safe(daemon.console.url)
                console.print(f"console: [bold]{url}/[/] (open it to watch the campaign)")
            code = await _campaign(daemon, db_url, contacts, rng, console)
            if linger:
                await _linger(daemon, console)
            return code
        finally:
            await daemon.stop(drain_seconds=5)
    finally:
        await asyncio.to_thread(server.stop)


async def _linger(daemon: Daemon, console: Console) -> None:
    """Keep the database, the daemon and the console up until Ctrl-C or SIGTERM."""
    url = f"{daemon.console.url}/" if daemon.console is not None else "(console disabled)"
    console.print(f"\neverything stays up: the console is at {markup_safe(url)} — Ctrl-C stops it")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def warn_if_exposed(settings: Settings, console: Console) -> bool:
    """Say so when the demo's daemon listens beyond loopback: it checks callbacks
    against the simulator's published credentials, so anyone who can reach it can
    forge them. True when warned."""
    host = settings.http.host
    if is_loopback_host(host):
        return False
    console.print(
        f"[yellow]warning[/]: http.host is {escape(host)}: the demo's webhook port is reachable "
        "beyond this machine, and its callbacks are signed with the simulator's published "
        "credentials; use 127.0.0.1 unless you mean it"
    )
    return True


async def _campaign(daemon: Daemon, db_url: str, count: int, rng: random.Random, console: Console) -> int:
    assert daemon.simulator is not None  # the demo always runs the in-process simulator
    async with database.connection(db_url, application_name=database.APP_DEMO) as conn:
        campaigns = CampaignStore(conn)
        campaign_id = await campaigns.create(
            NewCampaign(
                name=CAMPAIGN_NAME,
                script_template=SCRIPT,
                max_retries=2,
                retry_delay_minutes=0,
                caller_id=CALLER_ID,
                menu=MENU,
                machine_detection=True,
                voicemail_template=VOICEMAIL,
                language="es-ES",
                voice="Polly.Lucia",
            )
        )
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / "contacts.csv"
            numbers = write_contacts_csv(csv_path, count, rng)
            console.print(f"importing {count + 2} rows from a generated CSV:")
            result = await import_csv(
                conn,
                csv_path,
                campaign_id=campaign_id,
                report=lambda line: console.print(f"  {markup_safe(line)}"),
            )
            console.print(f"  {result.summary()}")
        # A few contacts show the other endings: the carrier refusing a number, and the DNC list.
        for number in numbers[3:6]:
            daemon.simulator.simulator.script(number, ["error:400:21211"])
        dnc = DoNotCallStore(conn)
        for number in numbers[6:8]:
            await dnc.add(number, "asked not to be called (demo)")
        await campaigns.set_status(campaign_id, CampaignStatus.ACTIVE)
        console.print(f"campaign {campaign_id} is active; the daemon is dialing:\n")
        started = time.monotonic()
        final = await _follow(campaigns, campaign_id, console)
    _summary(final, daemon, time.monotonic() - started, console)
    return 0 if final is not None and final.status is CampaignStatus.COMPLETED else 1


async def _follow(
    campaigns: CampaignStore, campaign_id: uuid.UUID, console: Console
) -> CampaignProgress | None:
    async def fetch() -> list[CampaignProgress]:
        snapshot = await campaigns.progress(campaign_id)
        return [snapshot] if snapshot is not None else []

    if console.is_terminal:
        snapshots = await watch(fetch, console, interval=0.5, max_updates=2400)
        return snapshots[0] if snapshots else None
    # Not a terminal (CI, a pipe): one plain line every second instead of a live view.
    for _ in range(1200):
        (snapshot,) = await fetch()
        done = snapshot.finished_contacts
        answers = responses_line(snapshot.responses) or "none yet"
        console.print(
            f"{snapshot.status}: {done}/{snapshot.contacts} contacts final, "
            f"{snapshot.total_calls} calls ({snapshot.successful_calls} completed, "
            f"{snapshot.failed_calls} failed, {snapshot.pending_calls} open); responses: {answers}"
        )
        if snapshot.is_final:
            return snapshot
        await asyncio.sleep(1.0)
    return (await fetch())[0]


def _summary(final: CampaignProgress | None, daemon: Daemon, seconds: float, console: Console) -> None:
    console.print()
    if final is None:
        console.print("[red]the campaign disappeared[/]")
        return
    console.print(render_progress(final))
    sim = daemon.simulator.simulator if daemon.simulator else None
    dials = len(sim.calls) if sim else 0
    console.print(
        f"\n[bold]{final.status}[/] in {seconds:.1f} s: {dials} calls placed through the simulator, "
        f"{final.successful_calls} answered, {final.failed_calls} failed attempts."
    )


def _run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    # The progress view is the demo's output; the daemon's info lines would bury it.
    configure_logging("warning", settings.logging.format, stream=sys.stderr)
    return asyncio.run(run_demo(settings, args.contacts, args.seed, console, linger=args.linger))


def register_cli(sub: Any) -> None:
    """Add `dialer demo`."""
    p = sub.add_parser("demo", help="run a demo campaign on an embedded PostgreSQL and the simulator")
    p.add_argument("--contacts", type=int, default=200, help="how many contacts to call (default 200)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible data")
    p.add_argument(
        "--linger",
        action="store_true",
        help="keep the database, the daemon and the console up after the campaign ends (until Ctrl-C)",
    )
    p.set_defaults(handler=_run)
