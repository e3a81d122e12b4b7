"""systemd/dialer.service passes systemd's own checks: `systemd-analyze verify` and an
offline security audit with an overall exposure of at most 1.1; and its resource
limits fit the daemon's own (docs/operations.md#connection-and-memory-limits)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dialer.config import Settings
from dialer.http_limits import SMALL_REQUEST_BYTES, fd_reserve

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "dialer.service"
INSTALLED_BINARY = "/opt/dialer/.venv/bin/dialer"
MAX_EXPOSURE = 1.1

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: apt-get install -y systemd)",
)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, check=False, timeout=60)


def _local_copy(tmp_path: Path) -> Path:
    """The unit as shipped, with ExecStart pointing at this checkout's installed `dialer`
    instead of /opt/dialer, which does not exist on a test machine."""
    binary = Path(sys.executable).parent / "dialer"
    assert binary.exists(), f"{binary}: install the package first (pip install -e .)"
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / "dialer.service"
    copy.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return copy


@needs_systemd
def test_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit once its ExecStart binary exists."""
    result = _analyze("verify", str(_local_copy(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_systemd
def test_shipped_unit_only_misses_its_binary() -> None:
    """Verifying the file as shipped complains about nothing but the absent /opt/dialer binary."""
    result = _analyze("verify", str(UNIT))
    complaints = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(f"{INSTALLED_BINARY} is not executable" in line for line in complaints), result.stderr


@needs_systemd
def test_security_exposure_is_low(tmp_path: Path) -> None:
    """The offline security audit rates the unit's overall exposure at most 1.1 (of 10)."""
    unit = str(_local_copy(tmp_path))
    result = _analyze("security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", unit)
    if "Failed to parse threshold" in result.stderr:
        # systemd 252 (Debian 12) parses the threshold as an integer in tenths of the exposure.
        result = _analyze("security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", unit)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def _setting(name: str) -> str:
    values = [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines() if line.startswith(f"{name}=")]
    assert len(values) == 1, f"{name}= set {len(values)} times in {UNIT.name}"
    return values[0]


def _bytes(size: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def test_unit_limits_files_memory_and_tasks() -> None:
    """LimitNOFILE leaves the default configuration a connection cap in the thousands
    after the database and call reserve; the worst the request buffers can hold at
    that cap fits well under MemoryHigh, itself under MemoryMax; TasksMax is set."""
    settings = Settings()
    nofile = int(_setting("LimitNOFILE"))
    reserve = fd_reserve(settings.database.pool_max_size, settings.dialer.max_concurrent_calls)
    cap = nofile - reserve
    assert cap >= 10_000
    high, hard = _bytes(_setting("MemoryHigh")), _bytes(_setting("MemoryMax"))
    assert high < hard
    worst_buffers = settings.http.max_buffered_bytes + cap * SMALL_REQUEST_BYTES
    assert worst_buffers < high // 2, f"{worst_buffers / 2**20:.0f} MiB of request buffers at the cap"
    assert 64 <= int(_setting("TasksMax")) <= 1024
