"""Configuration: `config.toml`, overridden by `DIALER_<SECTION>__<KEY>` environment
variables and by systemd credentials (README, Configuration; config.toml).

Precedence, highest first: explicit overrides (tests), environment, files in
`$CREDENTIALS_DIRECTORY` named `<section>__<key>` (systemd `LoadCredential=`), the TOML
file, then the defaults below.
"""

from __future__ import annotations

import ipaddress
import os
import zoneinfo
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dialer.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/dialer/config.toml")


class _Section(BaseModel):
    # A misspelt key is an error, not a silently ignored line.
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    """Where the state lives."""

    url: SecretStr = SecretStr("")  # empty: embedded PostgreSQL under data_dir
    listen_url: SecretStr = SecretStr("")  # direct connection for LISTEN behind a pooler
    data_dir: Path = Path("./var")
    pool_min_size: int = Field(default=2, ge=1, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=500)
    # 0 behind PgBouncer/Supavisor in transaction mode: no prepared statements there.
    statement_cache_size: int = Field(default=100, ge=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    keepalive_seconds: float = Field(default=5.0, gt=0)  # LISTEN connection probe period
    # Bounds every statement of the work pool: a silently dropped connection would
    # otherwise hang a query until the kernel's TCP timeout (many minutes).
    command_timeout_seconds: float = Field(default=60.0, gt=0)

    @field_validator("url", "listen_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        problem = postgres_url_problem(raw) if raw else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> DatabaseSettings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self


def postgres_url_problem(url: str) -> str | None:
    """Why `url` is not a usable postgresql:// URL, or None. The reason never quotes
    the URL: whatever part of it could not be parsed may be a piece of the password.
    The checks are those the driver's own parser would fail on with a raw ValueError
    (which prints the offending piece)."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            return "must be a postgresql:// URL (or empty for the embedded server)"
        if "@" in parts.path + parts.fragment or ("@" in parts.query and "@" not in parts.netloc):
            # user:pa?ss@host: the password ended the host part early.
            return (
                "cannot be parsed: the user name or password contains a '/', '?' or '#'; "
                "percent-encode it in the URL (%2F, %3F, %23)"
            )
        for host in parts.netloc.rpartition("@")[2].split(","):
            _, colon, port = host.rpartition("]")[2].rpartition(":")  # [::1]:5432 too
            if colon and not port.isdigit():
                return "cannot be parsed: a port is not a number"
        parse_qsl(parts.query, strict_parsing=True)
    except ValueError:
        return "cannot be parsed as a postgresql:// URL (percent-encode special characters)"
    return None


class HttpSettings(_Section):
    """The embedded webhook listener."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The address the carrier sees; signatures are checked against it, not against
    # whatever Host header a proxy forwards.
    public_url: str = "http://127.0.0.1:8080"
    # Only for a lab: with carrier.kind = "twilio" the public URL must be https://,
    # or signed callbacks (and the TwiML they fetch) travel the Internet in clear.
    allow_insecure_public_url: bool = False
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Connection and memory limits (docs/operations.md#connection-and-memory-limits).
    max_connections: int = Field(default=0, ge=0)  # 0: the file-descriptor limit less a reserve
    header_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    max_buffered_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    # /metrics on a listener of its own (e.g. 127.0.0.1:9090), so the public port
    # need not expose it; None: served on the main listener as well.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://dialer.example.com")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query string or fragment")
        return value.rstrip("/")


class CarrierSettings(_Section):
    """Which carrier the daemon dials through."""

    kind: Literal["simulator", "twilio"] = "simulator"


class TwilioSettings(_Section):
    """Credentials and call options for Twilio (or a Twilio-compatible server)."""

    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    from_number: str = ""
    api_base_url: str = "https://api.twilio.com"
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    voice: str = "alice"
    language: str = "en-US"

    @field_validator("api_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("from_number")
    @classmethod
    def _e164(cls, value: str) -> str:
        if value and not (value.startswith("+") and value[1:].isdigit() and 8 <= len(value) <= 16):
            raise ValueError("must be an E.164 number such as +34911234567")
        return value


class SimulatorSettings(_Section):
    """The in-process carrier simulator used when carrier.kind = "simulator"."""

    # Relative weights of final outcomes for numbers without a scripted outcome.
    answered: float = Field(default=0.6, ge=0)
    busy: float = Field(default=0.1, ge=0)
    no_answer: float = Field(default=0.2, ge=0)
    failed: float = Field(default=0.05, ge=0)
    machine: float = Field(default=0.05, ge=0)
    min_latency_ms: int = Field(default=50, ge=0)
    max_latency_ms: int = Field(default=400, ge=0)
    min_duration_seconds: int = Field(default=5, ge=0)
    max_duration_seconds: int = Field(default=60, ge=0)
    # Multiplies every simulated wait: 0.01 makes a 60 s call last 0.6 s.
    time_scale: float = Field(default=0.02, gt=0)
    seed: int | None = None
    # Who picks up an answered call: callee spec → relative weight, e.g.
    # {"press:1" = 6, "press:*,1" = 1, silent = 2, "hangup:4" = 1} (docs/carrier.md#callees).
    # Empty: every answered human listens for the drawn duration, as before.
    callees: dict[str, float] = Field(default_factory=dict)
    # Its credentials are published (anyone may sign requests to it), so it only posts
    # callbacks and fetches TwiML on loopback addresses unless this says otherwise.
    allow_remote_callbacks: bool = False

    @field_validator("callees")
    @classmethod
    def _callees(cls, value: dict[str, float]) -> dict[str, float]:
        # Imported here: the simulator package imports this module.
        from dialer.carrier.simulator.callee import parse_callee

        for spec, weight in value.items():
            parse_callee(spec)  # ValueError names the spec and what is wrong with it
            if not weight >= 0:
                raise ValueError(f"callee {spec!r}: weight must be ≥ 0, not {weight}")
        return value


class DialerSettings(_Section):
    """Pacing and behaviour of the dialing engine."""

    max_concurrent_calls: int = Field(default=50, ge=1, le=10_000)
    # The Twilio account's rate: every instance sharing the database together (docs/architecture.md#pacing).
    calls_per_second: float = Field(default=1.0, gt=0, le=1000)
    # No one-second window holds more than calls_per_second + bucket_size dials; dials are
    # spaced evenly, and this allowance only absorbs a late wake-up.
    bucket_size: int = Field(default=1, ge=1, le=1000)
    default_timezone: str = "UTC"
    drain_seconds: float = Field(default=30.0, ge=0)
    reconcile_after_seconds: float = Field(default=120.0, gt=0)
    tick_seconds: float = Field(default=1.0, gt=0, le=60)
    instance_timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


MIN_TOKEN_CHARS = 16


class ConsoleSettings(_Section):
    """The operator console (docs/console.md): web pages served by `dialer run` on a
    listener of their own, never on the carrier's callback port."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    # The address browsers use when a proxy is in front; empty: http://host:port.
    public_url: str = ""
    # Sign-in secrets. With none set the console is open to whoever can reach it,
    # which is allowed on a loopback address only.
    token: SecretStr = SecretStr("")  # operator role: may start, pause, resume, cancel, upload
    password_hash: SecretStr = SecretStr("")  # operator role by password (`dialer console hash-password`)
    read_only_token: SecretStr = SecretStr("")  # read-only role: sees everything, changes nothing
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Live updates: at most one snapshot per page kind per interval, however many tabs.
    refresh_seconds: float = Field(default=1.0, ge=0.1, le=60)
    max_live_clients: int = Field(default=100, ge=1, le=10_000)
    # A streamed upload counts against http.max_buffered_bytes while it arrives (the
    # process's HTTP guard): it must stay well below that budget.
    max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://dialer.example.com/console")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query string or fragment")
        return value.rstrip("/")

    @field_validator("token", "read_only_token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and len(raw) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"must be at least {MIN_TOKEN_CHARS} characters "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe())' makes one)"
            )
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash_format(cls, value: SecretStr) -> SecretStr:
        from dialer.console.passwords import check_hash_format

        raw = value.get_secret_value()
        if raw:
            check_hash_format(raw)
        return value

    @property
    def requires_sign_in(self) -> bool:
        """Any secret configured: every visitor signs in."""
        return any(
            s.get_secret_value() for s in (self.token, self.password_hash, self.read_only_token)
        )

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> ConsoleSettings:
        if self.enabled and not self.requires_sign_in and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host} is not a loopback address: set console.token (or "
                "console.password_hash) so the console asks for sign-in, or console.enabled = false"
            )
        return self


class LoggingSettings(_Section):
    """Log output."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    """The whole configuration of one dialer process."""

    model_config = SettingsConfigDict(
        env_prefix="DIALER_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    carrier: CarrierSettings = CarrierSettings()
    twilio: TwilioSettings = TwilioSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    dialer: DialerSettings = DialerSettings()
    console: ConsoleSettings = ConsoleSettings()
    logging: LoggingSettings = LoggingSettings()

    @model_validator(mode="after")
    def _upload_within_the_memory_budget(self) -> Settings:
        if self.console.enabled and self.console.max_upload_bytes > self.http.max_buffered_bytes // 2:
            raise ValueError(
                f"console.max_upload_bytes ({self.console.max_upload_bytes}) must be at most half of "
                f"http.max_buffered_bytes ({self.http.max_buffered_bytes}): an upload is buffered under it"
            )
        return self

    @model_validator(mode="after")
    def _carrier_credentials(self) -> Settings:
        if self.carrier.kind == "twilio":
            if not self.twilio.account_sid:
                raise ValueError("twilio.account_sid is required when carrier.kind = 'twilio'")
            if not self.twilio.auth_token.get_secret_value():
                raise ValueError("twilio.auth_token is required when carrier.kind = 'twilio'")
            if not self.http.public_url.startswith("https://") and not self.http.allow_insecure_public_url:
                raise ValueError(
                    "http.public_url must be https:// when carrier.kind = 'twilio' "
                    "(set http.allow_insecure_public_url = true only in a lab)"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and Path(credentials).is_dir():
            sources.append(
                NestedSecretsSettingsSource(
                    file_secret_settings,
                    secrets_dir=credentials,
                    secrets_nested_delimiter="__",
                    env_prefix="",
                )
            )
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def find_config_file(explicit: str | Path | None = None) -> Path | None:
    """The config file to read: --config, else $DIALER_CONFIG, else ./config.toml,
    else /etc/dialer/config.toml, else none (defaults and environment only)."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    from_env = os.environ.get("DIALER_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"config file {path} (from $DIALER_CONFIG) does not exist")
        return path
    for candidate in (Path("config.toml"), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration, raising ConfigError with one line per
    problem, each naming the key (`dialer.calls_per_second: …`)."""
    config_file = find_config_file(path)
    # pydantic-settings reads the TOML path from the class's model_config, so each
    # load gets a throwaway subclass naming its file instead of shared mutable state.
    settings_cls: type[Settings] = type(
        "Settings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})},
    )
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_file)) from None
    except (OSError, ValueError) as exc:  # unreadable or syntactically broken TOML
        raise ConfigError(f"cannot read config file {config_file}: {exc}") from None


def _describe(exc: ValidationError, config_file: Path | None) -> str:
    where = f" (in {config_file} or DIALER_* environment)" if config_file else ""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in error["loc"]) or "config"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"config error: {key}: {message}{where}")
    return "\n".join(lines)
