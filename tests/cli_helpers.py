"""Running the `dialer` command in tests: in-process (`dialer.cli.main`) against the
test's own database, with its output captured."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dialer.cli import main
from tests.harness import FROM_NUMBER


class Cli:
    """Runs `dialer …` in-process against the test's database and captures its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        def call() -> int:
            try:
                return main(list(argv))
            except SystemExit as exc:  # argparse usage errors
                return int(exc.code or 0)

        # A thread: main() runs its own event loop with asyncio.run.
        code = await asyncio.to_thread(call)
        out, err = self._capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """`dialer` pointed at the test database, with an empty config file, a caller id
    (as a configured system has) and quiet logs."""
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("DIALER_CONFIG", str(config))
    monkeypatch.setenv("DIALER_DATABASE__URL", db_url)
    monkeypatch.setenv("DIALER_TWILIO__FROM_NUMBER", FROM_NUMBER)
    monkeypatch.setenv("DIALER_LOGGING__LEVEL", "warning")
    return Cli(capsys)
