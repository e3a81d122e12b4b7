"""structlog set-up: JSON lines when stdout is not a terminal (journald), a console
renderer on a TTY, and a redactor that keeps secrets out of every line: it cleans the
event before rendering and, last of all, the rendered text itself (tracebacks
included), so nothing a renderer adds can carry a secret out."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

import structlog
from aiohttp.http_exceptions import BadHttpMessage

# Keys whose values are never logged, whatever they hold.
SECRET_KEYS = frozenset(
    {"auth_token", "password", "signature", "x_twilio_signature", "authorization", "dsn", "token"}
)
REDACTED = "[redacted]"
# postgresql://user:secret@host → postgresql://user:[redacted]@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)", re.I)
# In rendered text a URL ends at a quote too (a JSON string, a repr).
_URL_PASSWORD_IN_TEXT = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s\"']+:)(?P<pw>[^@\s\"']+)(?=@)", re.I
)
# A colouring renderer may put escape sequences between any two characters of a value.
_ANSI = r"(?:\x1b\[[0-9;]*m)*"


class MalformedHttpFilter(logging.Filter):
    """aiohttp logs a full traceback at error level for every request it cannot even
    parse (and answers 400 itself): the client's fault, not ours, and a cheap way for
    anyone to flood the journal with tracebacks. Demoted to one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite aiohttp's BadHttpMessage records in place; let everything through."""
        exc = record.exc_info[1] if record.exc_info else None
        if record.name.startswith("aiohttp") and isinstance(exc, BadHttpMessage):
            reason = str(exc.message).strip().splitlines()[0][:120] if exc.message else type(exc).__name__
            record.msg, record.args = "http_malformed_request: %s", (reason,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class SecretRedactor:
    """A structlog processor that blanks known secret values anywhere in an event,
    secret-looking keys, and passwords inside URLs."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._in_text = [re.compile(_ANSI.join(re.escape(c) for c in s)) for s in self._secrets]

    def scrub_text(self, text: str) -> str:
        """Blank the known secrets and URL passwords in rendered text, escape
        sequences a colouring renderer put inside them included."""
        for pattern in self._in_text:
            text = pattern.sub(REDACTED, text)
        return _URL_PASSWORD_IN_TEXT.sub(rf"\g<head>{REDACTED}", text)

    def rendered(self, logger: Any, method_name: str, rendered: Any) -> Any:
        """The processor after the renderer: the last word on every line written."""
        if isinstance(rendered, str):
            return self.scrub_text(rendered)
        if isinstance(rendered, bytes):
            return self.scrub_text(rendered.decode("utf-8", "replace")).encode("utf-8")
        return rendered

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", value)
        if isinstance(value, dict):
            return {k: REDACTED if _secret_key(k) else self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        return value

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            event_dict[key] = REDACTED if _secret_key(key) else self._clean(value)
        return event_dict


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS


def url_secrets(url: str) -> list[str]:
    """What of a database URL must never be logged: the URL itself and its password,
    as written and percent-decoded (a driver's error or frame may hold either)."""
    if not url:
        return []
    found = [url]
    try:
        password = urlsplit(url).password
    except ValueError:  # unparseable: the config check reports it; the whole URL is listed
        password = None
    if password:
        found += [password, unquote(password)]
    return found


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and route stdlib logging through it) once, at the entry point."""
    out = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    redactor = SecretRedactor(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor,
    ]
    renderer: Any
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        # Plain tracebacks: never the frames' local variables (they hold connection
        # parameters, URLs and passwords, cut to a width at which no pattern can
        # recognise them), and no syntax highlighting, which took seconds per
        # traceback with the event loop blocked (a database outage logs many).
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, renderer, redactor.rendered],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiohttp, asyncpg) log through stdlib; send their warnings the same way.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                redactor.rendered,
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    handler.addFilter(MalformedHttpFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))
