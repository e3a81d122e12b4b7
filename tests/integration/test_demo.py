"""`dialer demo` as a new user runs it: a subprocess, no configuration, an empty
directory; it must finish its campaign and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness import server_dir


def test_demo_runs_a_campaign_to_completion() -> None:
    """The demo starts its own PostgreSQL and simulator, and the campaign ends completed."""
    with server_dir("dialer-demo-") as workdir:
        _run_demo_in(workdir)


def _run_demo_in(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    result = subprocess.run(
        [sys.executable, "-m", "dialer", "demo", "--contacts", "60", "--seed", "3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "imported 60 new, 0 existing, 2 rejected" in out
    assert "line 62: " in out and "line 63: " in out
    assert "completed in" in out
    assert "invalid_number 3" in out and "do_not_call 2" in out
    assert (tmp_path / "var" / "demo" / "pgdata" / "PG_VERSION").exists()
