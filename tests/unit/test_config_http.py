"""The [http] settings the hardening added: an https public URL for real Twilio
(docs/operations.md#behind-a-reverse-proxy), and the listener limits' bounds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dialer.config import load_settings
from dialer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TWILIO = '[carrier]\nkind = "twilio"\n[twilio]\naccount_sid = "AC1"\nauth_token = "t0ken-t0ken"\n'


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("DIALER_") or var == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def _load(tmp_path: Path, toml: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(toml)
    load_settings(f)


def test_twilio_needs_an_https_public_url(tmp_path: Path) -> None:
    """carrier.kind = "twilio" with an http:// public_url is one config-error line."""
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, TWILIO + '[http]\npublic_url = "http://dialer.example.com"\n')
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "http.public_url must be https://" in message
    assert "allow_insecure_public_url" in message


def test_https_or_an_explicit_lab_switch_is_accepted(tmp_path: Path) -> None:
    """An https:// public_url, or allow_insecure_public_url = true, starts; the
    simulator never needs either."""
    _load(tmp_path, TWILIO + '[http]\npublic_url = "https://dialer.example.com"\n')
    _load(tmp_path, TWILIO + '[http]\npublic_url = "http://10.0.0.5:8080"\nallow_insecure_public_url = true\n')
    _load(tmp_path, '[http]\npublic_url = "http://127.0.0.1:8080"\n')


def test_dialer_run_stops_at_an_insecure_public_url(tmp_path: Path) -> None:
    """`dialer run` with real Twilio and http:// exits 2 with one line on stderr,
    before touching any database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    env.update(
        {
            "DIALER_CARRIER__KIND": "twilio",
            "DIALER_TWILIO__ACCOUNT_SID": "AC1",
            "DIALER_TWILIO__AUTH_TOKEN": "t0ken-t0ken",
            "DIALER_HTTP__PUBLIC_URL": "http://dialer.example.com",
            "DIALER_DATABASE__URL": "postgresql://nobody@127.0.0.1:1/none",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "dialer", "run"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "http.public_url must be https://" in lines[0], result.stderr
    assert "t0ken-t0ken" not in result.stderr


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[http]\nheader_timeout_seconds = 0\n", "http.header_timeout_seconds"),
        ("[http]\nbody_timeout_seconds = -1\n", "http.body_timeout_seconds"),
        ("[http]\nmax_connections = -5\n", "http.max_connections"),
        ("[http]\nmax_buffered_bytes = 10\n", "http.max_buffered_bytes"),
        ("[http]\nmetrics_port = 70000\n", "http.metrics_port"),
    ],
)
def test_bad_limits_name_their_key(tmp_path: Path, toml: str, needle: str) -> None:
    """Each out-of-range listener limit is one line naming its key."""
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, toml)
    assert needle in str(info.value)
    assert len(str(info.value).splitlines()) == 1
