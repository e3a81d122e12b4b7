"""One hierarchy for everything the dialer raises on purpose."""


class DialerError(Exception):
    """Base of every error the dialer raises deliberately."""


class ConfigError(DialerError):
    """The configuration is invalid; the message names the key."""


class MigrationError(DialerError):
    """A migration file failed; the message names the file and the reason."""


class DatabaseUnavailable(DialerError):
    """PostgreSQL cannot be reached (or the embedded server cannot start)."""


class TemplateError(DialerError):
    """A campaign's script template cannot be rendered (unknown placeholder …)."""


class CampaignInvalid(DialerError):
    """A campaign cannot be dialed as configured; the message says why."""


class ImportRejected(DialerError):
    """An import file cannot be read at all (not a CSV, no phone_number column …)."""


class CarrierError(DialerError):
    """The carrier refused or failed a request.

    `kind` tells the engine what to do: "permanent" (the number itself is wrong:
    final at once), "rejected" (the request was refused for another reason:
    counts as a failed attempt), "transient" (never reached the carrier or was
    throttled: retry later without counting an attempt) or "unknown" (timed out
    after sending: reconcile with the carrier before anything else).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.code = code
