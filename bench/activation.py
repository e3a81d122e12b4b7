"""Activation alone, at depth: what scheduling a campaign's contacts costs the
server per contact at full size beside 10,000 contacts, with the ids of the rows
random (`gen_random_uuid`, as before sql/0013) or time-ordered (the default since).

For each id kind and size: a fresh database whose contacts and campaign contacts
are written by SQL (checked numbers, as the importer writes them; far quicker than
importing a CSV, and the same rows to activation); VACUUM ANALYZE and CHECKPOINT;
then the housekeeping's own activation statement (`ACTIVATE_BATCH_SQL`) run as the
daemon runs it — two workers, one batch of `ACTIVATION_BATCH` per statement — until
every contact is scheduled, or only `--batches` batches (a prefix, for a shorter
run). Measured: wall time, the CPU of every server process (steadier than wall time
on a shared machine), WAL bytes and full-page images per contact
(`pg_stat_wal`), and the checkpoints it caused.

    .venv/bin/python -m bench.activation [--contacts 1000000] [--batches 30]

1,000,000 contacts with both id kinds: about 10 minutes on a quiet 2-core box, most
of it writing the contacts with random ids.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from bench._common import FROM_NUMBER, Result, Server, fresh_database, postgres, quiet, report
from bench.scale import server_cpu_seconds
from dialer import database
from dialer.store.housekeeping import ACTIVATION_BATCH, ACTIVATION_WORKERS, HousekeepingStore

BASELINE_CONTACTS = 10_000
WRITE_CHUNK = 100_000  # contacts written per statement
RANDOM_IDS = ("contacts", "campaign_contacts", "calls")

_WRITE_CONTACTS = """
    WITH ct AS (
        INSERT INTO contacts (first_name, last_name, phone_number,
                              checked_at, number_valid, resolved_timezone)
        SELECT 'Ana', 'García ' || i, '+3491' || lpad(i::text, 7, '0'), timezone('utc', now()), true,
               'Europe/Madrid'
        FROM generate_series($2::int, $3::int - 1) i ORDER BY i
        RETURNING id
    )
    INSERT INTO campaign_contacts (campaign_id, contact_id) SELECT $1, id FROM ct
"""
_WAL = "SELECT wal_bytes, wal_fpi FROM pg_stat_wal"
_CHECKPOINTS = "SELECT num_timed + num_requested FROM pg_stat_checkpointer"


@dataclass
class Figures:
    """One size with one kind of id."""

    contacts: int
    seconds: float
    server_cpu_s: float
    wal_bytes: float
    fpi: float
    checkpoints: int

    def per_contact(self, total: float) -> float:
        """A total divided by the contacts scheduled."""
        return total / self.contacts


async def _prepare(conn: asyncpg.Connection, contacts: int, random_ids: bool) -> uuid.UUID:
    if random_ids:
        for table in RANDOM_IDS:
            await conn.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT gen_random_uuid()")
    cid: uuid.UUID = await conn.fetchval(
        "INSERT INTO campaigns (name, caller_id, script_template, max_retries) "
        "VALUES ('activation', $1, 'Hola', 0) RETURNING id",
        FROM_NUMBER,
    )
    for low in range(0, contacts, WRITE_CHUNK):
        await conn.execute(_WRITE_CONTACTS, cid, low, min(contacts, low + WRITE_CHUNK))
    await conn.execute("VACUUM ANALYZE")
    await conn.execute("CHECKPOINT")
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
    return cid


async def measure(server: Server, contacts: int, random_ids: bool, batches: int) -> Figures:
    """Activate one campaign of `contacts` contacts on a fresh database."""
    async with fresh_database(server) as url:
        conn = await database.connect(url)
        pool = await asyncpg.create_pool(url, min_size=ACTIVATION_WORKERS, max_size=ACTIVATION_WORKERS)
        try:
            cid = await _prepare(conn, contacts, random_ids)
            now = datetime.now(UTC).replace(tzinfo=None)
            ran = [0, 0]  # batches, contacts marked
            ACTIVATE = HousekeepingStore.ACTIVATE_BATCH_SQL

            async def worker() -> None:
                while not batches or ran[0] < batches:
                    ran[0] += 1
                    row = await pool.fetchrow(ACTIVATE, cid, now, ACTIVATION_BATCH)
                    assert row is not None  # an aggregate always returns one row
                    ran[1] += int(row["marked"])
                    if row["marked"] < ACTIVATION_BATCH:
                        return

            wal0, cp0, cpu0 = (
                await conn.fetchrow(_WAL),
                await conn.fetchval(_CHECKPOINTS),
                server_cpu_seconds(server),
            )
            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(ACTIVATION_WORKERS)))
            seconds = time.monotonic() - started
            wal1, cp1, cpu1 = (
                await conn.fetchrow(_WAL),
                await conn.fetchval(_CHECKPOINTS),
                server_cpu_seconds(server),
            )
            assert wal0 is not None
            assert wal1 is not None
            calls = await conn.fetchval("SELECT total_calls FROM campaigns WHERE id = $1", cid)
            if calls != ran[1]:
                raise AssertionError(f"{ran[1]:,} contacts marked but total_calls = {calls:,}")
        finally:
            await pool.close()
            await conn.close()
    return Figures(
        contacts=ran[1],
        seconds=seconds,
        server_cpu_s=cpu1 - cpu0,
        wal_bytes=float(wal1[0] - wal0[0]),
        fpi=float(wal1[1] - wal0[1]),
        checkpoints=int(cp1 - cp0),
    )


def _row(kind: str, metric: str, unit: str, big: float, small: float, goal: str = "") -> None:
    ratio = big / small if small else float("nan")
    met = ratio <= 1.5 if goal else None
    report(Result("activation", f"{kind}: {metric}", big, unit, "10,000 contacts", small, ratio, goal, met))


async def run(contacts: int, batches: int, kinds: list[str]) -> None:
    """Both sizes for each id kind, on one server, baseline first."""
    with postgres() as server:
        for kind in kinds:
            random_ids = kind == "random"
            small = await measure(server, BASELINE_CONTACTS, random_ids, 0)
            big = await measure(server, contacts, random_ids, batches)
            label = f"{kind} ids, {big.contacts:,}"
            _row(
                label,
                "wall per contact",
                "µs",
                big.per_contact(big.seconds) * 1e6,
                small.per_contact(small.seconds) * 1e6,
            )
            _row(
                label,
                "server CPU per contact",
                "µs",
                big.per_contact(big.server_cpu_s) * 1e6,
                small.per_contact(small.server_cpu_s) * 1e6,
                goal="<= 1.5x",
            )
            _row(
                label,
                "WAL per contact",
                "bytes",
                big.per_contact(big.wal_bytes),
                small.per_contact(small.wal_bytes),
            )
            fpi, small_fpi = big.per_contact(big.fpi), small.per_contact(small.fpi)
            print(
                f"{'':10} ({fpi:.2f} full-page images per contact, {big.checkpoints} checkpoints; "
                f"{small_fpi:.2f} and {small.checkpoints} at 10,000; {big.seconds:.1f} s in all)"
            )


def main() -> None:
    """Parse flags and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=0, help="stop after this many batches (0: all)")
    parser.add_argument("--ids", choices=["both", "random", "ordered"], default="both")
    args = parser.parse_args()
    quiet()
    kinds = ["random", "ordered"] if args.ids == "both" else [args.ids]
    asyncio.run(run(args.contacts, args.batches, kinds))


if __name__ == "__main__":
    main()
