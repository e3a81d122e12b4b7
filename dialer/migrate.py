"""`dialer migrate`: apply the numbered files of `sql/` in order, each in its own
transaction, under an advisory lock, recorded in `dialer_migrations`."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from dialer.errors import MigrationError

log = structlog.get_logger(__name__)

# Any constant shared by every dialer process; two `dialer migrate` at once serialise.
MIGRATION_LOCK = 0x6469616C6572  # "dialer"
FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS dialer_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamp NOT NULL DEFAULT timezone('utc', now())
)
"""
# Like every table of the schema (docs/supabase.md): with no policy, a role that is not
# the owner (Supabase's anon through the REST API) can neither read nor change the
# bookkeeping, whose rows decide which migrations run. Applied to databases migrated
# before this rule too, on their next migrate.
RLS_ENABLED = "SELECT relrowsecurity FROM pg_class WHERE oid = 'dialer_migrations'::regclass"
ENABLE_RLS = "ALTER TABLE dialer_migrations ENABLE ROW LEVEL SECURITY"


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migrations_dir() -> Path:
    """Where the numbered SQL files are: $DIALER_SQL_DIR, else `sql/` beside the
    package (a source checkout or editable install), else the copy a wheel installs
    under `<prefix>/share/dialer/sql`."""
    override = os.environ.get("DIALER_SQL_DIR")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parent.parent / "sql"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "dialer" / "sql"


def discover(directory: Path | None = None) -> list[Migration]:
    """The migration files, in version order; anything else in the folder is refused."""
    directory = directory or migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations folder {directory} does not exist")
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(match["version"], match["name"], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number in {directory}")
    return found


async def pending(conn: asyncpg.Connection, directory: Path | None = None) -> list[Migration]:
    """The migrations not yet applied to this database."""
    exists = await conn.fetchval("SELECT to_regclass('dialer_migrations') IS NOT NULL")
    done: set[str] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM dialer_migrations")}
    return [m for m in discover(directory) if m.version not in done]


async def migrate(
    conn: asyncpg.Connection,
    directory: Path | None = None,
    *,
    on_applied: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Apply every pending migration; returns those applied (empty when up to date).

    A failing file is rolled back whole and reported with its name and the server's
    message; files before it stay applied. `on_applied` is told of each file as it is
    committed; when it is given (`dialer migrate` prints it) the log line is debug, so
    an operator reads each file once, not once as text and again as a log event.
    """
    files = discover(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(CREATE_TABLE)
        if not await conn.fetchval(RLS_ENABLED):
            await conn.execute(ENABLE_RLS)
        rows = await conn.fetch("SELECT version, checksum FROM dialer_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        done: list[Migration] = []
        for migration in files:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    log.warning(
                        "migration_changed_after_apply",
                        file=migration.path.name,
                        hint="applied files are never re-run; add a new numbered file instead",
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO dialer_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                detail = getattr(exc, "message", None) or str(exc)
                raise MigrationError(f"{migration.path.name} failed and was rolled back: {detail}") from exc
            if on_applied is None:
                log.info("migration_applied", file=migration.path.name)
            else:
                log.debug("migration_applied", file=migration.path.name)
                on_applied(migration)
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
