"""Configuration: file, environment, credentials, and one clear line per bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.config import load_settings
from dialer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("DIALER_CONFIG", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_repo_config_is_the_documented_default() -> None:
    """config.toml in the repo loads and equals the built-in defaults."""
    assert load_settings(REPO / "config.toml").model_dump() == load_settings().model_dump()


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DIALER_<SECTION>__<KEY> wins over the TOML file."""
    f = tmp_path / "c.toml"
    f.write_text("[dialer]\ncalls_per_second = 2.0\n[http]\nport = 9000\n")
    monkeypatch.setenv("DIALER_DIALER__CALLS_PER_SECOND", "7.5")
    s = load_settings(f)
    assert s.dialer.calls_per_second == 7.5
    assert s.http.port == 9000


def test_dialer_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$DIALER_CONFIG is used when --config is absent."""
    f = tmp_path / "x.toml"
    f.write_text("[http]\nport = 9100\n")
    monkeypatch.setenv("DIALER_CONFIG", str(f))
    assert load_settings().http.port == 9100


def test_systemd_credentials_supply_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file twilio__auth_token in $CREDENTIALS_DIRECTORY sets twilio.auth_token."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "twilio__auth_token").write_text("s3cret-token")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = load_settings()
    assert s.twilio.auth_token.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(s)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[dialer]\ncalls_per_second = -1\n", "dialer.calls_per_second"),
        ('[dialer]\ndefault_timezone = "Mars/Olympus"\n', "dialer.default_timezone: unknown IANA time zone"),
        ('[http]\npublic_url = "localhost:8080"\n', "http.public_url"),
        ("[dialer]\nmax_concurent_calls = 3\n", "dialer.max_concurent_calls: unknown key"),
        ('[database]\nurl = "mysql://x"\n', "database.url"),
        ('[carrier]\nkind = "twilio"\n', "twilio.account_sid is required"),
        ('[twilio]\nfrom_number = "911"\n', "twilio.from_number"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    """Each invalid setting is reported on one line that names its key."""
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(f)
    message = str(info.value)
    assert needle in message
    assert len(message.splitlines()) == 1


def test_broken_toml_says_which_file(tmp_path: Path) -> None:
    """A syntax error in the file names the file."""
    f = tmp_path / "broken.toml"
    f.write_text("[dialer\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_settings(f)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    """--config pointing nowhere is an error, not a silent fallback to defaults."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_never_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The auth token and the database URL (with its password) are SecretStr."""
    monkeypatch.setenv("DIALER_TWILIO__AUTH_TOKEN", "tok-abcdef")
    monkeypatch.setenv("DIALER_DATABASE__URL", "postgresql://u:pw-xyz@h/db")
    s = load_settings()
    text = repr(s) + str(s) + s.model_dump_json()
    assert "tok-abcdef" not in text and "pw-xyz" not in text
