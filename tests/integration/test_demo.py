"""`dialer demo` as a new user runs it: a subprocess, no configuration, an empty
directory; it must finish its campaign, and with `--linger` keep its console up
until Ctrl-C, then exit 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from tests.harness import server_dir

LINGER_LINE = "everything stays up: the console is at "


def test_demo_runs_a_campaign_to_completion_and_lingers_with_its_console() -> None:
    """The demo starts its own PostgreSQL and simulator, prints the console's URL, the
    campaign ends completed, and with --linger the console still serves the finished
    campaign until SIGINT, after which the demo exits 0. Its data directory's name
    holds Rich markup, printed as written."""
    with server_dir("dialer-demo-") as workdir:
        _run_demo_in(workdir)


def _run_demo_in(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    env["PYTHONUNBUFFERED"] = "1"
    # Markup in a configured path the demo prints: shown as written, never parsed.
    env["DIALER_DATABASE__DATA_DIR"] = "[bold]var"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialer", "demo", "--contacts", "60", "--seed", "3", "--linger"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    lingering = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if LINGER_LINE in line:
                lingering.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert lingering.wait(180), "".join(lines)[-3000:]
        out = "".join(lines)
        assert "starting PostgreSQL under [bold]var/demo" in out, out[:500]
        console = re.search(r"console: (http://127\.0\.0\.1:\d+)/", out)
        assert console, out[-3000:]
        with urllib.request.urlopen(f"{console.group(1)}/", timeout=10) as page:
            board = page.read().decode()
        assert "Recordatorio de citas (demo)" in board and "completed" in board
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    out = "".join(lines)
    assert "imported 60 new, 0 existing, 2 rejected" in out
    assert "line 62: " in out and "line 63: " in out
    assert "completed in" in out
    assert "invalid_number 3" in out and "do_not_call 2" in out
    # The Spanish appointment reminder's answers, tallied in the final status block.
    assert re.search(r"responses\s+confirmed \d+", out), out[-2000:]
    assert (tmp_path / "[bold]var" / "demo" / "pgdata" / "PG_VERSION").exists()
