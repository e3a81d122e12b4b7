"""The database boundary: only the connector and the store know asyncpg, and every
failure of the database leaves them as one DatabaseUnavailable (docs/architecture.md)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import asyncpg
import pytest

from dialer.database import DATABASE_ERRORS, translate_errors
from dialer.errors import DatabaseUnavailable
from dialer.store.campaigns import CampaignStore
from dialer.store.console import ConsoleStore
from dialer.store.contacts import ContactImportStore, DoNotCallStore
from dialer.store.lifecycle import LifecycleStore

PACKAGE = Path(__file__).resolve().parents[2] / "dialer"
# The modules that may import asyncpg; everything else goes through them.
BOUNDARY = {"database.py", "listener.py", "migrate.py", "embedded.py"}


def _imports_asyncpg(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "asyncpg" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "asyncpg":
            return True
    return False


def _inside_boundary(path: Path) -> bool:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] == "store" or str(relative) in BOUNDARY


def test_only_the_boundary_modules_import_asyncpg() -> None:
    """No module of dialer/ outside database, listener, migrate, embedded and store/ imports asyncpg."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if not _inside_boundary(path) and _imports_asyncpg(path)
    ]
    assert offenders == []


def test_the_import_check_sees_both_import_forms(tmp_path: Path) -> None:
    """The check above finds `import asyncpg` and `from asyncpg… import …` alike."""
    for source in ("import asyncpg\n", "from asyncpg.pool import Pool\n", "import os, asyncpg.exceptions\n"):
        path = tmp_path / "m.py"
        path.write_text(source)
        assert _imports_asyncpg(path), source
    (tmp_path / "m.py").write_text("import asyncpgx\n# import asyncpg\n")
    assert not _imports_asyncpg(tmp_path / "m.py")


@pytest.mark.parametrize(
    "store", [LifecycleStore, CampaignStore, ContactImportStore, DoNotCallStore, ConsoleStore]
)
def test_every_public_store_coroutine_is_behind_the_boundary(store: type) -> None:
    """A store method that forgets @translate_errors would leak asyncpg errors: none does."""
    public = [
        name
        for name, member in inspect.getmembers(store)
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    ]
    assert public
    assert [n for n in public if not getattr(getattr(store, n), "translates_errors", False)] == []


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection lost"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.InterfaceError("pool is closing"),
        asyncpg.InternalClientError("cannot switch to state 12"),
        ConnectionRefusedError("refused"),
        TimeoutError(),
    ],
)
async def test_database_errors_leave_as_database_unavailable(error: BaseException) -> None:
    """Each way asyncpg says the database went away becomes DatabaseUnavailable, chained."""
    assert isinstance(error, DATABASE_ERRORS)

    @translate_errors
    async def fails() -> None:
        raise error

    with pytest.raises(DatabaseUnavailable) as caught:
        await fails()
    assert caught.value.__cause__ is error


async def test_a_missing_schema_says_to_migrate() -> None:
    """An undefined table (no `dialer migrate` yet) is named as such."""

    @translate_errors
    async def fails() -> None:
        raise asyncpg.UndefinedTableError('relation "campaigns" does not exist')

    with pytest.raises(DatabaseUnavailable, match="run `dialer migrate` first"):
        await fails()


async def test_other_errors_pass_through_untouched() -> None:
    """A bug is not a database outage: a ValueError stays a ValueError; results pass."""

    @translate_errors
    async def fails() -> None:
        raise ValueError("bug")

    @translate_errors
    async def answers(x: int) -> int:
        return x + 1

    with pytest.raises(ValueError, match="bug"):
        await fails()
    assert await answers(1) == 2
