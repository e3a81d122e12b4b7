"""A non-editable install (a wheel, as docs/operations.md installs it) carries the
migrations, and `dialer migrate` finds them there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dialer import migrate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file names inside a wheel built from this checkout (built once per module)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True, capture_output=True, timeout=120,
    )
    (wheel,) = out.glob("dialer-*.whl")
    return zipfile.ZipFile(wheel).namelist()


def test_wheel_ships_every_migration(wheel_names: list[str]) -> None:
    """Every sql/NNNN_*.sql is in the wheel under share/dialer/sql."""
    shipped = {Path(n).name for n in wheel_names if "/share/dialer/sql/" in n}
    assert shipped == {p.name for p in (REPO / "sql").glob("*.sql")}


def test_wheel_ships_console_templates_and_static_files(wheel_names: list[str]) -> None:
    """The console's templates, stylesheet, vendored htmx files and their licences are package data."""
    console = REPO / "dialer" / "console"
    expected = {f"dialer/console/templates/{p.name}" for p in (console / "templates").glob("*.html")}
    expected |= {f"dialer/console/static/{p.name}" for p in (console / "static").iterdir()}
    assert {"dialer/console/static/htmx.LICENSE", "dialer/console/static/sse.LICENSE"} <= expected
    assert expected <= set(wheel_names)


def test_installed_copy_is_found_without_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sql/ beside the package, migrations come from <prefix>/share/dialer/sql."""
    fake_package = tmp_path / "site" / "dialer"
    fake_package.mkdir(parents=True)
    monkeypatch.setattr(migrate, "__file__", str(fake_package / "migrate.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    monkeypatch.delenv("DIALER_SQL_DIR", raising=False)
    assert migrate.migrations_dir() == tmp_path / "prefix" / "share" / "dialer" / "sql"
