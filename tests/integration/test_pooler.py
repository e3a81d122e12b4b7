"""Transaction-pooler mode: a LISTEN URL on a transaction pooler is refused at start
with one clear line, and with statement_cache_size = 0 the daemon leaves no named
prepared statement on any server session (which a pooler would hand to others)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from dialer import database
from dialer.carrier.simulator import RunningSimulator
from dialer.errors import ConfigError
from dialer.service import Daemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import daemon_settings, wait_for

REPO = Path(__file__).resolve().parents[2]
POOLED = "postgresql://postgres.ref:s3cret-pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres"
SESSION = "postgresql://postgres.ref:s3cret-pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres"


@pytest.mark.parametrize(
    ("url", "pooled"),
    [
        (POOLED, True),
        (SESSION, False),
        ("postgresql://u:p@10.0.0.5:6543/db", True),
        ("postgresql://u:p@h1:5432,h2:6543/db", True),
        ("postgresql://u:p@localhost/db?port=6543", True),
        ("postgresql://u:p@[::1]:5432/db", False),
        ("postgresql://u:p@db.ref.supabase.co:5432/postgres", False),
    ],
)
def test_transaction_pooler_detection(url: str, pooled: bool) -> None:
    """Port 6543 anywhere in the URL (netloc, multi-host, ?port=) is a transaction pooler."""
    assert database.is_transaction_pooler(url) is pooled


def test_refusal_names_the_key_and_hides_the_password() -> None:
    """The error names database.listen_url (or url when it stands in) and never the password."""
    with pytest.raises(ConfigError) as info:
        database.refuse_pooled_listen(POOLED, from_listen_url=True)
    text = str(info.value)
    assert text.startswith("database.listen_url: ") and "s3cret" not in text and "\n" not in text
    with pytest.raises(ConfigError, match=r"^database\.url \(used for LISTEN"):
        database.refuse_pooled_listen(POOLED, from_listen_url=False)
    database.refuse_pooled_listen(SESSION, from_listen_url=True)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DIALER_DATABASE__URL": POOLED}, "database.url"),
        ({"DIALER_DATABASE__URL": SESSION, "DIALER_DATABASE__LISTEN_URL": POOLED}, "database.listen_url"),
    ],
)
def test_dialer_run_refuses_a_pooled_listen_url(env: dict[str, str], key: str) -> None:
    """`dialer run` exits 1 at once with one stderr line, before any connection."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    result = subprocess.run(
        [sys.executable, "-m", "dialer", "run"],
        cwd=REPO, env={**clean, **env, "DIALER_DATABASE__STATEMENT_CACHE_SIZE": "0"},
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {key}") and "transaction pooler" in lines[0]
    assert "s3cret" not in result.stderr


async def _named_statements(pool: asyncpg.Pool, size: int) -> int:
    """Named prepared statements over `size` connections of the pool, each asked on its own session."""
    conns = [await pool.acquire() for _ in range(size)]
    try:
        total = 0
        for c in conns:
            total += int(await c.fetchval("SELECT count(*) FROM pg_prepared_statements"))
        return total
    finally:
        for c in conns:
            await pool.release(c)


@pytest.mark.parametrize("cache", [0, 100])
async def test_statement_cache_off_leaves_no_prepared_statement(
    db_url: str, conn: asyncpg.Connection, sim: RunningSimulator, cache: int
) -> None:
    """A campaign run with statement_cache_size = 0 leaves no named prepared statement
    on any session (with the cache on, the same run leaves some: the check can see them)."""
    cid = await make_campaign(conn, status="active", max_retries=1)
    await add_contacts(conn, cid, [madrid_number(i) for i in range(30)])
    settings = daemon_settings(db_url, sim.url)
    settings.database.statement_cache_size = cache
    settings.database.pool_min_size = settings.database.pool_max_size = 4
    daemon = Daemon(settings, db_url=db_url)
    await daemon.start()
    try:

        async def done() -> bool:
            status = await conn.fetchval("SELECT status::text FROM campaigns WHERE id = $1", cid)
            return bool(status == "completed")

        await wait_for(done, 30, "the campaign to complete")
        await asyncio.sleep(0.2)
        assert daemon._db is not None
        named = await _named_statements(daemon._db, 4)
    finally:
        await daemon.stop(drain_seconds=1)
    if cache == 0:
        assert named == 0
    else:
        assert named > 0
