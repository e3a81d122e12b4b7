"""One campaign of a million contacts: CSV import, activation by the daemon's
housekeeping, the due-call claim at full depth, and the daemon's peak RSS — beside the
same measurements at 10,000 contacts in the same run, so the ratio shows how the cost
per contact grows with size.

For each size: write a CSV (90 % Madrid numbers written with spaces, 10 % New York,
some with their own zone, a custom column) under a temporary directory; import it
into a draft campaign through `dialer.importer.import_csv`; start `python -m dialer
run` as a subprocess (its RSS sampled with psutil) against a simulator in instant
mode; set the campaign active and time until its dial frontier is scheduled (every
contact of a campaign smaller than the frontier; docs/architecture.md#activation)
and until its first dial, probing the claim meanwhile; let it dial a few seconds;
stop it; then time `LifecycleStore.claim(…, 50)` at the depth the daemon left and
print its `EXPLAIN (ANALYZE, BUFFERS)` plan, the same claim when most or all due
calls are outside calling hours, and the frontier check housekeeping runs. With
`--full-depth`, every remaining contact is then scheduled as activation did before
the frontier (what a campaign whose zones are all outside their hours still gets)
and the claims are timed again with every contact due.

    .venv/bin/python -m bench.scale [--contacts 1000000] [--quick] [--full-depth]

The full run takes about 5 minutes on a 2-core box (most of it the 1M import);
--full-depth adds about 4; --quick (100,000 contacts) about 1 minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import psutil

from bench._common import (
    FROM_NUMBER,
    Deadline,
    Result,
    Server,
    free_port,
    fresh_database,
    percentile,
    postgres,
    quiet,
    report,
    simulator_process,
)
from dialer import database
from dialer.config import DatabaseSettings
from dialer.importer import import_csv
from dialer.store.claims import ClaimStore
from dialer.store.housekeeping import ACTIVATION_BATCH, FRONTIER, FRONTIER_LOW, HousekeepingStore
from dialer.store.lifecycle import LifecycleStore
from dialer.twiml import validate_template

BASELINE_CONTACTS = 10_000
CLAIM_LIMIT = 50  # a scheduler pass claims at most the pool's free slots; 50 is the default pool
CLAIM_REPEATS = 40
DIAL_SECONDS = 5.0  # dialing after activation, so the RSS covers live calls too
RSS_SAMPLE_SECONDS = 0.05
IMPORT_BOUND = 600.0  # seconds; each wait below has its own bound
ACTIVATION_BOUND = 300.0
DAEMON_START_BOUND = 60.0
PROBE_INTERVAL = 0.25  # seconds between claim probes while activation runs

GOAL_RSS_MB = 200.0
GOAL_CLAIM_MS = 5.0
GOAL_ACTIVATION_S = 30.0
GOAL_PER_CONTACT_RATIO = 1.5


# ------------------------------------------------------------------ the CSV


def _row(i: int) -> str:
    """Row i of the file: unique numbers, written the way people type them."""
    if i % 10 == 9:
        # New York: +1 212 NXX XXXX, exchanges 200… (i < 8M keeps them unique).
        phone = f"+1 212 {200 + i // 10_000:03d} {i % 10_000:04d}"
        zone = ""
    else:
        # Madrid fixed lines: +34 91 + 7 digits.
        digits = f"{i:07d}"
        phone = f"+34 91{digits[0]} {digits[1:3]} {digits[3:5]} {digits[5:]}"
        # Some contacts carry their own zone, which wins over the number's.
        zone = "Atlantic/Canary" if i % 20 == 3 else ""
    email = f"c{i}@example.com" if i % 2 else ""
    return f"Ana,García {i},{phone},{email},{zone},C-{i}\n"


def write_csv(path: Path, contacts: int) -> None:
    """A contacts file of `contacts` valid, unique rows (written in 1 MB chunks)."""
    with path.open("w", encoding="utf-8") as f:
        f.write("first_name,last_name,phone_number,email,timezone,Customer ID\n")
        chunk: list[str] = []
        for i in range(contacts):
            chunk.append(_row(i))
            if len(chunk) >= 10_000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))


# ------------------------------------------------------------------ the daemon


class RssSampler:
    """Samples a process's resident set size in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            try:
                self.peak = max(self.peak, self._proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join(5)
        return self.peak / (1024 * 1024)


@contextlib.contextmanager
def daemon_process(url: str, sim_url: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m dialer run` on loopback against the simulator, configured through
    the environment only (its cwd is an empty directory: no config.toml is read).
    SIGTERM at exit; its log is printed if it fails."""
    port = free_port()
    env = {
        **os.environ,
        "DIALER_DATABASE__URL": url,
        "DIALER_HTTP__PORT": str(port),
        "DIALER_HTTP__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DIALER_CARRIER__KIND": "simulator",
        "DIALER_CONSOLE__ENABLED": "false",
        "DIALER_TWILIO__FROM_NUMBER": FROM_NUMBER,
        "DIALER_TWILIO__API_BASE_URL": sim_url,
        "DIALER_DIALER__CALLS_PER_SECOND": "200",
        "DIALER_DIALER__BUCKET_SIZE": "200",
        "DIALER_DIALER__MAX_CONCURRENT_CALLS": "50",
        "DIALER_DIALER__TICK_SECONDS": "0.2",
        "DIALER_DIALER__DRAIN_SECONDS": "2",
        "DIALER_DIALER__INSTANCE_TIMEOUT_SECONDS": "3600",
        "DIALER_LOGGING__LEVEL": "warning",
        "DIALER_LOGGING__FORMAT": "console",
    }
    env.pop("DIALER_CONFIG", None)
    log_path = workdir / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialer", "run"], cwd=workdir, env=env, stdout=log_file, stderr=log_file
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            if proc.returncode not in (0, -signal.SIGTERM):
                print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)


# ------------------------------------------------------------------ measuring


@dataclass
class Figures:
    """What one size measured."""

    contacts: int
    import_s: float = 0.0
    activation_s: float = 0.0  # until the frontier (or the whole campaign) is scheduled
    activated: int = 0  # calls created by then
    first_dial_s: float = float("nan")  # from `active` to the first call dialed
    frontier_check_ms: float = 0.0  # housekeeping's look at the frontier, at depth
    due: int = 0  # due calls when the claims were timed
    full_depth: Figures | None = None  # the claims again with every contact scheduled
    probe_ms: list[float] = field(default_factory=list)  # claims while activation ran
    probe_rows: int = 0
    peak_rss_mb: float = 0.0
    dialed: int = 0
    claim_ms: float = 0.0  # LifecycleStore.claim(…, 50), wall time, averaged
    claim_server_ms: float = 0.0  # EXPLAIN ANALYZE execution time
    plan: str = ""
    claim_few_in_hours_ms: float = 0.0  # only the 10 % New York contacts are in hours
    claim_none_in_hours_ms: float = 0.0  # no due call in hours: the scan finds nothing
    activation_server_cpu_s: float = float("nan")  # every server process, while activation ran

    def per_contact_us(self, seconds: float) -> float:
        """Microseconds per contact."""
        return seconds / self.contacts * 1e6

    def per_activated_us(self, seconds: float) -> float:
        """Microseconds per contact scheduled during activation."""
        return seconds / self.activated * 1e6


async def create_campaign(conn: asyncpg.Connection) -> uuid.UUID:
    """A draft campaign dialable at any hour, no retries."""
    cid: uuid.UUID = await conn.fetchval(
        "INSERT INTO campaigns (name, caller_id, script_template, max_retries, retry_delay_minutes) "
        "VALUES ('scale', $1, 'Hola {{first_name}}', 0, 0) RETURNING id",
        FROM_NUMBER,
    )
    return cid


async def probe_claim(
    conn: asyncpg.Connection, cid: uuid.UUID, hours: tuple[Any, Any] = (None, None)
) -> tuple[float, int]:
    """CLAIM_SQL as the store runs it (LIMIT 50), inside a transaction rolled back so
    the campaign's state is untouched: (milliseconds, rows claimed)."""
    tx = conn.transaction()
    await tx.start()
    try:
        started = time.perf_counter()
        rows = await conn.fetch(
            ClaimStore.CLAIM_SQL,
            cid,
            _utcnow(),
            "UTC",
            hours[0],
            hours[1],
            None,
            CLAIM_LIMIT,
            uuid.uuid4(),
            None,  # no holiday calendar
        )
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        await tx.rollback()
    return elapsed, len(rows)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _hours_window(zone: str, minutes_before: int, minutes_after: int) -> tuple[Any, Any]:
    """A calling-hours window around the current local time in `zone`."""
    local = datetime.now(ZoneInfo(zone))
    return (
        (local - timedelta(minutes=minutes_before)).time().replace(second=0, microsecond=0),
        (local + timedelta(minutes=minutes_after)).time().replace(second=0, microsecond=0),
    )


async def explain_claim(
    conn: asyncpg.Connection, cid: uuid.UUID, hours: tuple[Any, Any]
) -> tuple[str, float]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim, rolled back: (plan, execution ms)."""
    tx = conn.transaction()
    await tx.start()
    try:
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + ClaimStore.CLAIM_SQL,
            cid,
            _utcnow(),
            "UTC",
            hours[0],
            hours[1],
            None,
            CLAIM_LIMIT,
            uuid.uuid4(),
            None,  # no holiday calendar
        )
    finally:
        await tx.rollback()
    plan = "\n".join(r[0] for r in rows)
    found = re.search(r"Execution Time: ([0-9.]+) ms", plan)
    return plan, float(found.group(1)) if found else float("nan")


_UNCLAIM = """
    UPDATE calls SET status = 'scheduled', claimed_by = NULL, claimed_at = NULL, dialed_number = NULL
    WHERE id = ANY($1::uuid[])
"""


async def timed_claims(store: LifecycleStore, cid: uuid.UUID) -> float:
    """Average wall time of CLAIM_REPEATS committed claims of CLAIM_LIMIT calls. Each
    claim's calls are handed back after it (untimed): a daemon dials what it claims,
    so the live calls the next claim steps around stay as many as the daemon left,
    not 50 more per repeat."""
    campaign = next(c for c in await store.dialable_campaigns() if c.id == cid)
    for _ in range(3):  # warm the pool's prepared statements
        await store.pool.execute(_UNCLAIM, [c.id for c in await store.claim(campaign, CLAIM_LIMIT)])
    elapsed = 0.0
    for _ in range(CLAIM_REPEATS):
        started = time.perf_counter()
        claimed = await store.claim(campaign, CLAIM_LIMIT)
        elapsed += time.perf_counter() - started
        await store.pool.execute(_UNCLAIM, [c.id for c in claimed])
    return elapsed * 1000 / CLAIM_REPEATS


async def _wait_for_instance(conn: asyncpg.Connection, proc: subprocess.Popen[bytes]) -> None:
    """Until the daemon has registered itself (it migrates, then registers)."""
    deadline = Deadline(DAEMON_START_BOUND, "daemon start")
    while not await conn.fetchval("SELECT count(*) FROM dialer_instances WHERE stopped_at IS NULL"):
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode} at start")
        deadline.check()
        await asyncio.sleep(0.05)


def server_cpu_seconds(server: Server) -> float:
    """CPU seconds (user + system) used so far by the embedded server's processes —
    postmaster, backends, checkpointer, WAL writer, autovacuum — or NaN for an
    external server. Steadier than wall time on a shared machine: other work there
    stretches the wall clock, not the CPU a statement needs."""
    if server.embedded is None:
        return float("nan")
    pid = int((server.embedded.pgdata / "postmaster.pid").read_text().splitlines()[0])
    total = 0.0
    postmaster = psutil.Process(pid)
    for proc in [postmaster, *postmaster.children()]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


async def activate_and_dial(
    server: Server,
    conn: asyncpg.Connection,
    cid: uuid.UUID,
    contacts: int,
    sim_url: str,
    url: str,
    workdir: Path,
    f: Figures,
) -> None:
    """Run the daemon, activate the campaign, time activation (probing the claim
    meanwhile) and the server CPU it took, dial for DIAL_SECONDS, stop the daemon;
    record its peak RSS. The server CPU includes the claims the daemon runs
    meanwhile, as activation with dialing going on costs on a real server."""
    with daemon_process(url, sim_url, workdir) as proc:
        sampler = RssSampler(proc.pid)
        try:
            await _wait_for_instance(conn, proc)
            await asyncio.sleep(0.5)  # a first housekeeping pass on an idle database
            cpu_before = server_cpu_seconds(server)
            started = time.monotonic()
            await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
            deadline = Deadline(ACTIVATION_BOUND, f"activation of {contacts:,} contacts")
            next_probe = started + PROBE_INTERVAL
            target = min(contacts, FRONTIER)
            made = 0
            while made < target:
                made = await conn.fetchval("SELECT total_calls FROM campaigns WHERE id = $1", cid)
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {proc.returncode} during activation")
                deadline.check()
                if time.monotonic() >= next_probe:
                    ms, rows = await probe_claim(conn, cid)
                    f.probe_ms.append(ms)
                    f.probe_rows += rows
                    next_probe = time.monotonic() + PROBE_INTERVAL
                await _note_first_dial(conn, f, started)
                await asyncio.sleep(0.02)
            f.activation_s = time.monotonic() - started
            f.activated = int(made)
            f.activation_server_cpu_s = server_cpu_seconds(server) - cpu_before
            while f.first_dial_s != f.first_dial_s:  # NaN: not yet
                deadline.check()
                await _note_first_dial(conn, f, started)
                await asyncio.sleep(0.02)
            await asyncio.sleep(DIAL_SECONDS)
            f.dialed = int(await conn.fetchval("SELECT count(*) FROM calls WHERE dialed_at IS NOT NULL"))
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
            f.peak_rss_mb = sampler.stop()


async def _note_first_dial(conn: asyncpg.Connection, f: Figures, started: float) -> None:
    if f.first_dial_s != f.first_dial_s and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM calls WHERE dialed_at IS NOT NULL)"
    ):
        f.first_dial_s = time.monotonic() - started


async def frontier_check_ms(conn: asyncpg.Connection, cid: uuid.UUID) -> float:
    """Average time of housekeeping's frontier check (HousekeepingStore.FRONTIER_SQL),
    run every few seconds per campaign with contacts still pending."""
    args = (cid, _utcnow(), FRONTIER_LOW, "UTC")
    await conn.fetchval(HousekeepingStore.FRONTIER_SQL, *args)
    started = time.perf_counter()
    for _ in range(10):
        await conn.fetchval(HousekeepingStore.FRONTIER_SQL, *args)
    return (time.perf_counter() - started) * 100


async def schedule_everyone(conn: asyncpg.Connection, cid: uuid.UUID) -> None:
    """Every contact still pending gets its call, batch after batch (activation as it
    was before the frontier, and as a campaign whose zones are all closed gets it)."""
    while True:
        row = await conn.fetchrow(HousekeepingStore.ACTIVATE_BATCH_SQL, cid, _utcnow(), ACTIVATION_BATCH)
        if row is None or row["marked"] < ACTIVATION_BATCH:
            return


async def claims_at_depth(url: str, conn: asyncpg.Connection, cid: uuid.UUID, f: Figures) -> None:
    """The claim at the depth found, the daemon stopped: the store's own claim timed,
    its plan, the claim when few or no due calls are inside calling hours, and the
    frontier check."""
    f.due = int(
        await conn.fetchval("SELECT count(*) FROM calls WHERE campaign_id = $1 AND status = 'scheduled'", cid)
    )
    f.frontier_check_ms = await frontier_check_ms(conn, cid)
    pool = await database.create_pool(url, DatabaseSettings(pool_min_size=1, pool_max_size=2))
    try:
        store = LifecycleStore(
            pool,
            instance_id=uuid.uuid4(),
            default_from_number=FROM_NUMBER,
            validate_template=validate_template,
        )
        await store.register_instance(1000.0)
        f.claim_ms = await timed_claims(store, cid)
    finally:
        await pool.close()
    f.plan, f.claim_server_ms = await explain_claim(conn, cid, (None, None))
    # Only New York (10 %) inside hours: a window around its local time, which is
    # 6 hours from Madrid's, so Madrid's contacts (90 %) are all outside.
    few = _hours_window("America/New_York", 30, 60)
    # Nobody inside hours: a window around the local time 12 hours ahead of Madrid's.
    madrid = datetime.now(ZoneInfo("Europe/Madrid")) + timedelta(hours=12)
    none = (
        (madrid - timedelta(minutes=30)).time().replace(second=0, microsecond=0),
        (madrid + timedelta(minutes=30)).time().replace(second=0, microsecond=0),
    )
    # resolved_timezone decides, so pass the Madrid zone as the fallback: unresolved
    # rows would be judged in UTC otherwise.
    few_ms = [(await probe_claim(conn, cid, few))[0] for _ in range(5)]
    none_ms = [(await probe_claim(conn, cid, none))[0] for _ in range(3)]
    f.claim_few_in_hours_ms = sum(few_ms) / len(few_ms)
    f.claim_none_in_hours_ms = sum(none_ms) / len(none_ms)


async def measure(
    server: Server, sim_url: str, contacts: int, tmp: Path, full_depth: bool = False
) -> Figures:
    """Every figure for one campaign of `contacts` contacts, on a fresh database."""
    f = Figures(contacts=contacts)
    path = tmp / f"contacts-{contacts}.csv"
    await asyncio.to_thread(write_csv, path, contacts)
    async with fresh_database(server) as url:
        conn = await database.connect(url)
        try:
            cid = await create_campaign(conn)
            rejected: list[str] = []
            started = time.monotonic()
            result = await asyncio.wait_for(
                import_csv(conn, path, campaign_id=cid, report=rejected.append), IMPORT_BOUND
            )
            f.import_s = time.monotonic() - started
            path.unlink()
            if result.new != contacts or rejected:
                raise AssertionError(f"import: {result.summary()}; first rejects: {rejected[:3]}")
            workdir = tmp / f"daemon-{contacts}"
            workdir.mkdir()
            await activate_and_dial(server, conn, cid, contacts, sim_url, url, workdir, f)
            await claims_at_depth(url, conn, cid, f)
            if full_depth:
                await schedule_everyone(conn, cid)
                f.full_depth = Figures(contacts=contacts)
                await claims_at_depth(url, conn, cid, f.full_depth)
        finally:
            await conn.close()
    return f


def _ratio_row(metric: str, big: Figures, small: Figures, seconds: str, activated: bool = False) -> None:
    """Per-contact cost at full size against the baseline size (per contact scheduled
    during activation, with `activated`)."""
    b = (big.per_activated_us if activated else big.per_contact_us)(getattr(big, seconds))
    s = (small.per_activated_us if activated else small.per_contact_us)(getattr(small, seconds))
    report(
        Result(
            "scale",
            metric,
            b,
            "µs/ct",
            baseline=f"{small.contacts:,} contacts µs/contact",
            baseline_value=s,
            ratio=b / s,
            goal=f"<= {GOAL_PER_CONTACT_RATIO:.1f}x",
            met=b / s <= GOAL_PER_CONTACT_RATIO,
        )
    )


def _claim_rows(where: str, big: Figures, small: Figures) -> None:
    """The claim's figures at one depth, beside the baseline's."""
    report(
        Result(
            "scale",
            f"claim 50, {where} (store.claim)",
            big.claim_ms,
            "ms",
            baseline=f"at {small.contacts:,} ms",
            baseline_value=small.claim_ms,
            ratio=big.claim_ms / small.claim_ms,
            goal=f"< {GOAL_CLAIM_MS:.0f} ms",
            met=big.claim_ms < GOAL_CLAIM_MS,
        )
    )
    for metric, attr in (
        ("claim 50, server execution time", "claim_server_ms"),
        ("claim 50, only 10 % in hours", "claim_few_in_hours_ms"),
        ("claim, none in hours (full scan)", "claim_none_in_hours_ms"),
    ):
        b, s = getattr(big, attr), getattr(small, attr)
        report(
            Result(
                "scale", metric, b, "ms", baseline=f"at {small.contacts:,} ms", baseline_value=s, ratio=b / s
            )
        )


def print_report(big: Figures, small: Figures) -> None:
    """One table: the full size beside the baseline size."""
    n = f"{big.contacts:,}"
    print(f"\nclaim plan, {n} contacts, {big.due:,} due (EXPLAIN ANALYZE, BUFFERS):\n{big.plan}\n")
    if "calls_due_idx" not in big.plan:
        print("WARNING: the claim did not use calls_due_idx")
    report(
        Result(
            "scale",
            f"import {n} contacts",
            big.import_s,
            "s",
            baseline=f"{small.contacts:,} contacts s",
            baseline_value=small.import_s,
            goal="",
        )
    )
    rates = f"{big.contacts / big.import_s:,.0f} rows/s; {small.contacts / small.import_s:,.0f} at baseline"
    print(f"{'':10} ({rates})")
    _ratio_row("import, per contact", big, small, "import_s")
    report(
        Result(
            "scale",
            f"activation {n} contacts, until dialing with its frontier scheduled",
            big.activation_s,
            "s",
            baseline=f"{small.contacts:,} contacts, all scheduled s",
            baseline_value=small.activation_s,
            goal=f"< {GOAL_ACTIVATION_S:.0f} s",
            met=big.activation_s < GOAL_ACTIVATION_S,
        )
    )
    print(
        f"{'':10} ({big.activated:,} calls created by then, {small.activated:,} at baseline; "
        f"first dial {big.first_dial_s:.2f} s after `active`, {small.first_dial_s:.2f} s at baseline)"
    )
    _ratio_row("activation, per contact scheduled", big, small, "activation_s", activated=True)
    _ratio_row(
        "activation server CPU, per contact scheduled", big, small, "activation_server_cpu_s", activated=True
    )
    report(
        Result(
            "scale",
            "frontier check (every 5 s while contacts wait)",
            big.frontier_check_ms,
            "ms",
            baseline=f"at {small.contacts:,} ms",
            baseline_value=small.frontier_check_ms,
        )
    )
    _claim_rows(f"{n} contacts ({big.due:,} due)", big, small)
    probe_p50 = percentile(big.probe_ms, 50)
    probe_max = max(big.probe_ms, default=float("nan"))
    report(Result("scale", "claim 50 during activation p50", probe_p50, "ms"))
    report(Result("scale", "claim 50 during activation max", probe_max, "ms"))
    print(f"{'':10} ({len(big.probe_ms)} probes, {big.probe_rows:,} calls claimable in all)")
    if big.full_depth is not None and small.full_depth is not None:
        _claim_rows(f"{n} due (every contact scheduled)", big.full_depth, small.full_depth)
    report(
        Result(
            "scale",
            f"daemon peak RSS, {n} contacts",
            big.peak_rss_mb,
            "MB",
            baseline=f"{small.contacts:,} contacts MB",
            baseline_value=small.peak_rss_mb,
            ratio=big.peak_rss_mb / small.peak_rss_mb,
            goal=f"< {GOAL_RSS_MB:.0f} MB",
            met=big.peak_rss_mb < GOAL_RSS_MB,
        )
    )
    print(f"{'':10} (calls dialed during the run: {big.dialed:,} at {n}, {small.dialed:,} at baseline)")


async def run(contacts: int, baseline: int, full_depth: bool) -> None:
    """Baseline size first, then the full size, on one server and one simulator."""
    tmp = Path(tempfile.mkdtemp(prefix="dialer-bench-scale-"))
    try:
        with postgres() as server, simulator_process(instant=True) as sim_url:
            started = time.monotonic()
            small = await measure(server, sim_url, baseline, tmp, full_depth)
            big = await measure(server, sim_url, contacts, tmp, full_depth)
            took = time.monotonic() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_report(big, small)
    print(f"  (measured in {took:.0f} s)")


def main() -> None:
    """Parse flags and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=BASELINE_CONTACTS)
    parser.add_argument("--quick", action="store_true", help="CI size: 100,000 contacts")
    parser.add_argument(
        "--full-depth", action="store_true", help="also time the claims with every contact scheduled"
    )
    args = parser.parse_args()
    quiet()
    asyncio.run(run(100_000 if args.quick else args.contacts, args.baseline, args.full_depth))


if __name__ == "__main__":
    main()
