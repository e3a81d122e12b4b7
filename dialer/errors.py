"""One hierarchy for everything the dialer raises on purpose."""

from enum import StrEnum


class DialerError(Exception):
    """Base of every error the dialer raises deliberately."""


class ConfigError(DialerError):
    """The configuration is invalid; the message names the key."""


class MigrationError(DialerError):
    """A migration file failed; the message names the file and the reason."""


class StartupError(DialerError):
    """The daemon could not start (a port already taken …); the message names what."""


class DatabaseUnavailable(DialerError):
    """PostgreSQL cannot be reached (or the embedded server cannot start)."""


class TemplateError(DialerError):
    """A campaign's script template cannot be rendered (unknown placeholder …)."""


class ImportRejected(DialerError):
    """An import file cannot be read at all (not a CSV, no phone_number column …)."""


class CarrierErrorKind(StrEnum):
    """What a failed carrier request means (docs/carrier.md); the engine turns it into
    what the store should do with the attempt (`dialer.models.DialIntent`)."""

    PERMANENT = "permanent"  # the number itself is wrong: final at once
    REJECTED = "rejected"  # refused for another reason: a failed attempt, retried by the rules
    TRANSIENT = "transient"  # never reached the carrier, or throttled: later, no attempt counted
    UNKNOWN = "unknown"  # timed out after sending: reconcile with the carrier first


class CarrierError(DialerError):
    """The carrier refused or failed a request; `kind` says what that means."""

    def __init__(
        self,
        message: str,
        *,
        kind: CarrierErrorKind,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.code = code
