"""Secrets stay out of everything the dialer prints: console-format logs of a database
outage (tracebacks included), and the one-line error for a database URL whose
password cannot be parsed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
from twilio.request_validator import RequestValidator

from dialer import cli
from dialer.carrier.simulator import SIMULATOR_AUTH_TOKEN, RunningSimulator
from dialer.config import load_settings
from dialer.embedded import EmbeddedPostgres
from dialer.errors import ConfigError
from tests.harness import daemon_env, free_port, server_dir, wait_for

PASSWORD = "Xq7-very-secret-pw-3KfZ"


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL for this test alone (it is stopped under the daemon)."""
    with server_dir("dialer-secrets-") as base:
        server = EmbeddedPostgres(base / "pg", settings={"fsync": "off"})
        server.start()
        yield server
        server.stop()


@pytest.fixture
async def app_url(own_server: EmbeddedPostgres) -> str:
    """A login role with a known password on the test's own server, and its URL."""
    admin = await asyncpg.connect(own_server.url)
    try:
        await admin.execute(f"CREATE ROLE dialer_app LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    finally:
        await admin.close()
    return f"postgresql://dialer_app:{PASSWORD}@127.0.0.1:{urlsplit(own_server.url).port}/postgres"


def _spawn_daemon(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "dialer", "run"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def _get(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=3)) as r:
            return r.status
    except aiohttp.ClientError:
        return 0


async def test_console_logs_of_a_database_outage_never_show_the_password(
    own_server: EmbeddedPostgres, app_url: str, sim: RunningSimulator, tmp_path: Path
) -> None:
    """`logging.format = "console"`, PostgreSQL stopped under a running daemon, signed
    callbacks failing on it: tracebacks are printed, the password never is."""
    port = free_port()
    env = daemon_env(app_url, sim.url, port, tick_seconds=0.2)
    env.update({"DIALER_LOGGING__FORMAT": "console", "DIALER_LOGGING__LEVEL": "debug"})
    log = tmp_path / "daemon.log"
    proc = _spawn_daemon(env, log)
    try:
        base = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            return await _get(f"{base}/readyz") == 200

        await wait_for(ready, 30, "the daemon to be ready", interval=0.1)
        await asyncio.to_thread(own_server.stop)
        validator = RequestValidator(SIMULATOR_AUTH_TOKEN)

        async def callback(http: aiohttp.ClientSession) -> int:
            path = f"/twilio/status?call_id={uuid.uuid4()}"
            form = {"CallSid": "CA" + "0" * 32, "CallStatus": "completed", "AccountSid": "AC" + "0" * 32}
            signature = validator.compute_signature(base + path, form)
            async with http.post(base + path, data=form, headers={"X-Twilio-Signature": signature}) as r:
                return r.status

        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(*(callback(http) for _ in range(4)))
        assert set(statuses) == {503}  # the database errors were met, and answered
    finally:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    text = log.read_text(errors="replace")
    assert "Traceback" in text or "traceback" in text.lower(), "the outage produced no traceback to check"
    assert PASSWORD not in text
    assert PASSWORD[:8] not in text


URLS_WITH_RESERVED_CHARACTERS = [
    "postgresql://app:s3cr?etPw@127.0.0.1:5432/dialer",
    "postgresql://app:s3cr/etPw@127.0.0.1:5432/dialer",
    "postgresql://app:s3cr#etPw@127.0.0.1:5432/dialer",
    "postgresql://app:s3:cr?etPw@127.0.0.1:5432/dialer",
    "postgresql://app:s3crPw@127.0.0.1:54x2/dialer",
]
PIECES = ("s3cr", "etPw", "54x2")


@pytest.mark.parametrize("url", URLS_WITH_RESERVED_CHARACTERS)
def test_unparseable_database_url_is_one_line_without_the_secret(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In-process: loading such a URL raises ConfigError, one line naming the key and
    none of the password."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIALER_DATABASE__URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config error: database.url: ")
    assert not any(piece in message for piece in PIECES), message


@pytest.mark.parametrize(
    ("url", "argv"),
    [(URLS_WITH_RESERVED_CHARACTERS[0], ["campaign", "list"]), (URLS_WITH_RESERVED_CHARACTERS[2], ["run"])],
    ids=["question-mark-campaign-list", "hash-run"],
)
def test_unparseable_database_url_through_the_real_cli(url: str, argv: list[str], tmp_path: Path) -> None:
    """`dialer campaign list` and `dialer run` as real processes: exit 2, one line on
    stderr naming database.url, no piece of the password, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    env["DIALER_DATABASE__URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "dialer", *argv], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("config error: database.url: ")
    assert not any(piece in done.stderr for piece in PIECES), done.stderr


def test_listen_url_is_checked_the_same_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """database.listen_url gets the same one-line error from `dialer.cli.main`, naming
    that key."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIALER_DATABASE__LISTEN_URL", URLS_WITH_RESERVED_CHARACTERS[0])
    assert cli.main(["campaign", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: database.listen_url: ") and err.count("\n") == 1
    assert not any(piece in err for piece in PIECES), err


async def test_a_built_url_that_cannot_be_parsed_never_reaches_the_driver() -> None:
    """A URL that skipped the configuration check (built in code) is refused by
    `database.connect` with one line quoting no piece of it."""
    from dialer import database

    with pytest.raises(ConfigError) as info:
        await database.connect(URLS_WITH_RESERVED_CHARACTERS[1])
    assert not any(piece in str(info.value) for piece in PIECES)
    assert database.describe_url(URLS_WITH_RESERVED_CHARACTERS[4]) == "(an unparseable URL)"
