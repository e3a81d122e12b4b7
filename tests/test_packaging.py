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


def test_wheel_ships_every_migration(tmp_path: Path) -> None:
    """Every sql/NNNN_*.sql is in the wheel under share/dialer/sql."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=120,
    )
    (wheel,) = tmp_path.glob("dialer-*.whl")
    shipped = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if "/share/dialer/sql/" in n}
    assert shipped == {p.name for p in (REPO / "sql").glob("*.sql")}


def test_installed_copy_is_found_without_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sql/ beside the package, migrations come from <prefix>/share/dialer/sql."""
    fake_package = tmp_path / "site" / "dialer"
    fake_package.mkdir(parents=True)
    monkeypatch.setattr(migrate, "__file__", str(fake_package / "migrate.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    monkeypatch.delenv("DIALER_SQL_DIR", raising=False)
    assert migrate.migrations_dir() == tmp_path / "prefix" / "share" / "dialer" / "sql"
