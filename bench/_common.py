"""Shared plumbing of the benchmark scripts: a PostgreSQL server (embedded, stock
settings, or $DIALER_BENCH_DATABASE_URL), fresh migrated databases, daemon settings on
loopback, pgbench as the same-run baseline, percentiles and the result lines that
`bench/run_all.sh` gathers into one table.

Every figure is printed beside a baseline measured in the same run on the same
machine, because absolute numbers on a shared 2-core box mean little: the ratio is
what we track.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from pydantic import SecretStr

import dialer.carrier.twilio as twilio_carrier
from dialer import database
from dialer.carrier.simulator import (
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    RunningSimulator,
    start_simulator,
)
from dialer.config import (
    CarrierSettings,
    ConsoleSettings,
    DatabaseSettings,
    DialerSettings,
    HttpSettings,
    LoggingSettings,
    Settings,
    SimulatorSettings,
    TwilioSettings,
)
from dialer.embedded import EmbeddedPostgres, _bin_dir
from dialer.logs import configure_logging
from dialer.migrate import migrate

FROM_NUMBER = "+34910000000"
RESULTS_ENV = "DIALER_BENCH_RESULTS"  # run_all.sh: a file each result is appended to as JSON


def quiet() -> None:
    """Daemons under benchmark log errors only: logging is not what we measure."""
    configure_logging("error", "console", stream=sys.stderr)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """The PostgreSQL server a benchmark runs against."""

    admin_url: str
    embedded: EmbeddedPostgres | None

    def url_for(self, name: str) -> str:
        """URL of another database on this server."""
        return database.with_database(self.admin_url, name)


@contextlib.contextmanager
def postgres() -> Iterator[Server]:
    """An embedded PostgreSQL 18 with stock settings (fsync on: durability is part of
    the cost we measure) in a temporary directory, stopped at exit; or the server of
    $DIALER_BENCH_DATABASE_URL."""
    external = os.environ.get("DIALER_BENCH_DATABASE_URL")
    if external:
        yield Server(admin_url=external, embedded=None)
        return
    base = Path(tempfile.mkdtemp(prefix="dialer-bench-pg-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pg")
    url = server.start()
    try:
        yield Server(admin_url=url, embedded=server)
    finally:
        server.stop()
        # A million-contact run leaves gigabytes here.
        shutil.rmtree(base, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(server: Server, migrated: bool = True) -> AsyncIterator[str]:
    """A new database (migrated unless told otherwise), dropped afterwards."""
    name = f"dialer_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server.admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = server.url_for(name)
    if migrated:
        conn = await database.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    try:
        yield url
    finally:
        admin = await asyncpg.connect(server.admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


def daemon_settings(db_url: str, simulator_url: str, **dialer: Any) -> Settings:
    """One daemon on loopback dialing the given simulator; `dialer` overrides knobs."""
    port = free_port()
    knobs: dict[str, Any] = {
        "calls_per_second": 1000.0,
        "bucket_size": 1000,
        "max_concurrent_calls": 200,
        "tick_seconds": 0.2,
        "instance_timeout_seconds": 3600.0,
    }
    knobs.update(dialer)
    return Settings(
        database=DatabaseSettings(url=SecretStr(db_url), pool_min_size=2, pool_max_size=10),
        http=HttpSettings(port=port, public_url=f"http://127.0.0.1:{port}"),
        carrier=CarrierSettings(kind="simulator"),
        twilio=TwilioSettings(from_number=FROM_NUMBER, api_base_url=simulator_url),
        simulator=SimulatorSettings(min_latency_ms=0, max_latency_ms=0, seed=7),
        dialer=DialerSettings(**knobs),
        console=ConsoleSettings(enabled=False),  # bench/console.py turns it on
        logging=LoggingSettings(level="error"),
    )


async def xact_commits(conn: asyncpg.Connection) -> int:
    """Committed transactions of the current database so far (pg_stat is a snapshot
    per transaction: clear it first so the figure is fresh)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    value = await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    return int(value)


async def next_xid(conn: asyncpg.Connection) -> int:
    """The next transaction id the server will assign, without assigning one: the
    difference over a run is exactly the number of write transactions the whole
    server committed or aborted in it (pg_stat_database counters are flushed by each
    backend at most once a second, later when idle, so they drift over a short run)."""
    return int(await conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"))


async def make_campaign(conn: asyncpg.Connection, contacts: int, *, status: str = "draft") -> uuid.UUID:
    """A campaign with `contacts` valid Madrid numbers, inserted set-based and already
    checked (as the importer leaves them), no calling-hours limit, no retries."""
    cid: uuid.UUID = await conn.fetchval(
        "INSERT INTO campaigns (name, caller_id, max_retries, retry_delay_minutes, status) "
        "VALUES ('bench', $1, 0, 0, 'draft') RETURNING id",
        FROM_NUMBER,
    )
    await conn.execute(
        """
        WITH ins AS (
            INSERT INTO contacts (phone_number, first_name, checked_at, number_valid, resolved_timezone)
            SELECT '+3491' || lpad(g::text, 7, '0'), 'Ana', timezone('utc', now()), true, 'Europe/Madrid'
            FROM generate_series(1, $2) g
            RETURNING id
        )
        INSERT INTO campaign_contacts (campaign_id, contact_id) SELECT $1, id FROM ins
        """,
        cid,
        contacts,
    )
    if status != "draft":
        await conn.execute("UPDATE campaigns SET status = $2 WHERE id = $1", cid, status)
    return cid


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 to 100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# ------------------------------------------------------------------ pgbench


def pgbench_update_tps(url: str, seconds: float = 5.0, clients: int = 8) -> float:
    """pgbench on the same server: a one-statement UPDATE by primary key, `clients`
    connections, for `seconds`. The ceiling for any design that commits one small
    transaction per unit of work on this machine."""
    parts = urlsplit(url)
    env = {
        **os.environ,
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "postgres",
        "PGPASSWORD": parts.password or "",
        "PGDATABASE": parts.path.lstrip("/"),
    }
    pgbench = str(_bin_dir() / "pgbench")
    subprocess.run([pgbench, "-i", "-q", "-s", "1"], env=env, check=True, capture_output=True, timeout=120)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("\\set aid random(1, 100000)\n")
        script.write("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n")
    try:
        os.chmod(script.name, 0o644)
        out = subprocess.run(
            [
                pgbench,
                "-n",
                "-f",
                script.name,
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(max(1, round(seconds))),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(script.name)
    found = re.search(r"tps = ([0-9.]+)", out)
    if not found:
        raise RuntimeError(f"pgbench printed no tps:\n{out}")
    return float(found.group(1))


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Result:
    """One line of the final table: a figure beside its same-run baseline."""

    bench: str
    metric: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None


def report(result: Result) -> None:
    """Print one result and append it to $DIALER_BENCH_RESULTS for run_all.sh."""
    base = f"  [{result.baseline}: {result.baseline_value:,.1f}]" if result.baseline_value is not None else ""
    ratio = f"  ratio {result.ratio:.2f}" if result.ratio is not None else ""
    verdict = {True: "  MET", False: "  MISSED", None: ""}[result.met]
    goal = f"  goal {result.goal}" if result.goal else ""
    head = f"{result.bench:10} {result.metric:38} {result.value:12,.2f} {result.unit:8}"
    print(f"{head}{base}{ratio}{goal}{verdict}")
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(result)) + "\n")


def machine() -> str:
    """One line naming the machine the figures come from."""
    cpus = os.cpu_count()
    python = platform.python_version()
    return f"{platform.machine()} {cpus} CPU, Python {python}, {platform.system()} {platform.release()}"


class Deadline:
    """A wall-clock bound every loop of a benchmark checks."""

    def __init__(self, seconds: float, what: str) -> None:
        self.until = time.monotonic() + seconds
        self.what = what

    def check(self) -> None:
        """Raise when the bound has passed."""
        if time.monotonic() > self.until:
            raise TimeoutError(f"benchmark bound exceeded: {self.what}")

    @property
    def left(self) -> float:
        """Seconds left."""
        return max(0.0, self.until - time.monotonic())


async def wait_until(predicate: Any, deadline: Deadline, interval: float = 0.05) -> None:
    """Poll an async predicate until true, within the deadline."""
    while not await predicate():
        deadline.check()
        await asyncio.sleep(interval)


# ------------------------------------------------------------------ simulator process


def _simulator_main(out: Any, instant: bool, settings: dict[str, Any], record: bool = False) -> None:
    """Child process: serve a simulator until SIGTERM; send its URL to the parent (and,
    when `record`, at the end, the arrival times of its create requests)."""
    import signal

    from dialer.carrier.simulator import SIMULATOR_ACCOUNT_SID, SIMULATOR_AUTH_TOKEN, start_simulator
    from dialer.config import SimulatorSettings

    quiet()

    async def serve() -> None:
        running = await start_simulator(
            SimulatorSettings(**settings),
            account_sid=SIMULATOR_ACCOUNT_SID,
            auth_token=SIMULATOR_AUTH_TOKEN,
            instant=instant,
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        out.put(running.url)
        try:
            await stop.wait()
        finally:
            if record:
                out.put(running.simulator.create_times())
            await running.stop()

    asyncio.run(serve())


@dataclass
class RecordingSimulator:
    """A simulator process's URL, and once it stopped, the monotonic arrival times of
    its create requests (CLOCK_MONOTONIC is one clock for every process of the host)."""

    url: str
    create_times: list[float] = field(default_factory=list)


@contextlib.contextmanager
def _simulator_child(instant: bool, record: bool, settings: dict[str, Any]) -> Iterator[RecordingSimulator]:
    """The carrier simulator in a spawned process, stopped at exit; with `record`, its
    create requests' arrival times are handed back once it stopped."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    merged = {"min_latency_ms": 0, "max_latency_ms": 0, "seed": 5, **ALWAYS_ANSWERED, **settings}
    proc = ctx.Process(target=_simulator_main, args=(queue, instant, merged, record), daemon=True)
    proc.start()
    sim = RecordingSimulator("")
    try:
        sim.url = str(queue.get(timeout=60))
        yield sim
    finally:
        proc.terminate()
        try:
            if record and sim.url:
                sim.create_times = list(queue.get(timeout=30))
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


@contextlib.contextmanager
def recording_simulator_process(**settings: Any) -> Iterator[RecordingSimulator]:
    """An instant simulator in its own process, like `simulator_process`, that hands
    back when each create request arrived once it stops (at the end of the block)."""
    with _simulator_child(True, True, settings) as sim:
        yield sim


ALWAYS_ANSWERED: dict[str, float] = {"answered": 1, "busy": 0, "no_answer": 0, "failed": 0, "machine": 0}


async def instant_simulator(seed: int) -> RunningSimulator:
    """An in-process simulator that answers every call at once, with no latency."""
    settings = {"min_latency_ms": 0, "max_latency_ms": 0, "seed": seed, **ALWAYS_ANSWERED}
    return await start_simulator(
        SimulatorSettings.model_validate(settings),
        account_sid=SIMULATOR_ACCOUNT_SID,
        auth_token=SIMULATOR_AUTH_TOKEN,
        instant=True,
    )


@contextlib.contextmanager
def simulator_process(instant: bool = True, **settings: Any) -> Iterator[str]:
    """The carrier simulator in its own process (the carrier's CPU is not the
    dialer's overhead); yields its base URL, stops it at exit."""
    with _simulator_child(instant, False, settings) as sim:
        yield sim.url


@contextlib.contextmanager
def recorded_writes() -> Iterator[list[float]]:
    """Monotonic times at which a daemon started inside the block had sent a create
    request's headers (the carrier's aiohttp trace hook, which every carrier session
    made meanwhile calls, wrapped for the block)."""
    writes: list[float] = []
    original = twilio_carrier._on_headers_sent

    async def hook(session: Any, ctx: Any, params: Any) -> None:
        if params.method == "POST" and params.url.path.endswith("/Calls.json"):
            writes.append(time.monotonic())
        await original(session, ctx, params)

    twilio_carrier._on_headers_sent = hook
    try:
        yield writes
    finally:
        twilio_carrier._on_headers_sent = original
