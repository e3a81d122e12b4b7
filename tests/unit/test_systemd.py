"""The sd_notify helper against datagram sockets the tests bind themselves."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialer.systemd import SystemdNotifier


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound to a file path, as systemd provides it."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(1)
        yield path, sock


def _received(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_each_method_sends_exactly_its_datagram(path_socket: tuple[str, socket.socket]) -> None:
    """ready/watchdog/stopping/status each send one datagram with exactly the protocol text."""
    path, sock = path_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.ready()
    assert notifier.watchdog()
    assert notifier.status("dialing 3 calls")
    assert notifier.stopping("draining")
    assert notifier.ready(status="up")
    assert _received(sock) == [
        b"READY=1",
        b"WATCHDOG=1",
        b"STATUS=dialing 3 calls",
        b"STOPPING=1\nSTATUS=draining",
        b"READY=1\nSTATUS=up",
    ]


def test_status_text_stays_on_one_line(path_socket: tuple[str, socket.socket]) -> None:
    """A newline in a status cannot smuggle a second assignment (e.g. READY=1) into the datagram."""
    path, sock = path_socket
    SystemdNotifier.from_env({"NOTIFY_SOCKET": path}).status("a\nREADY=1")
    assert _received(sock) == [b"STATUS=a READY=1"]


def test_abstract_namespace_socket() -> None:
    """An '@name' address reaches the abstract-namespace socket '\\0name'."""
    name = f"dialer-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert notifier.watchdog()
        assert _received(sock) == [b"READY=1", b"WATCHDOG=1"]


def test_no_socket_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET nothing is sent, nothing fails, and the watchdog is off."""
    notifier = SystemdNotifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notifier.status("x")
    assert notifier.watchdog_interval() is None


def test_unreachable_socket_is_reported_not_raised(tmp_path: Path) -> None:
    """A socket path nobody listens on makes the send return False instead of raising."""
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not notifier.ready()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=30 s gives a 15 s ping interval."""
    notifier = SystemdNotifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog_interval() == 15.0


def test_watchdog_for_another_pid_is_ignored() -> None:
    """WATCHDOG_PID naming another process (we are its child) means the watchdog is not ours."""
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier.from_env(env).watchdog_interval() is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert SystemdNotifier.from_env(env).watchdog_interval() == 15.0


def test_malformed_watchdog_usec_is_off() -> None:
    """A non-numeric or zero WATCHDOG_USEC disables the watchdog instead of crashing."""
    assert SystemdNotifier.from_env({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert SystemdNotifier.from_env({"WATCHDOG_USEC": "0"}).watchdog_interval() is None


def test_sample_config_and_env_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd/config.toml is valid as shipped once the token credential and the env file's URL are present."""
    from dialer.config import load_settings

    repo = Path(__file__).resolve().parents[2]
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "twilio__auth_token").write_text("token-from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    for line in (repo / "systemd" / "dialer.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            monkeypatch.setenv(key, value)
    settings = load_settings(repo / "systemd" / "config.toml")
    assert settings.twilio.auth_token.get_secret_value() == "token-from-credential"
    assert settings.database.url.get_secret_value().startswith("postgresql://dialer:")
    assert settings.dialer.drain_seconds < 45  # TimeoutStopSec in dialer.service
