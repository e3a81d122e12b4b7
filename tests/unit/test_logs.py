"""Logs never carry secrets."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from dialer.logs import SecretRedactor, configure_logging, url_secrets


def test_secrets_are_redacted_from_json_lines() -> None:
    """Known secret values, secret-named keys and URL passwords are blanked."""
    out = io.StringIO()
    configure_logging("info", "json", secrets=["tok-123456"], stream=out)
    log = structlog.get_logger("t")
    log.info(
        "event_one",
        auth_token="tok-123456",
        note="token is tok-123456 here",
        url="postgresql://postgres:hunter22@127.0.0.1:5432/x",
        signature="abc",
        call_sid="CA1",
    )
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert "tok-123456" not in out.getvalue()
    assert "hunter22" not in out.getvalue()
    assert line["auth_token"] == "[redacted]"
    assert line["signature"] == "[redacted]"
    assert line["url"] == "postgresql://postgres:[redacted]@127.0.0.1:5432/x"
    assert line["call_sid"] == "CA1"


def _fail_with(url: str, password: str) -> None:
    shown_only_as_a_local = "-".join(["local", "value", "marker"])  # in no source line
    raise ConnectionError(f"cannot reach {url} (password {password}, {len(shown_only_as_a_local)})")


def _exc_info(url: str, password: str) -> BaseException:
    try:
        _fail_with(url, password)
    except ConnectionError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_tracebacks_are_redacted_after_rendering(fmt: str) -> None:
    """An exception whose message and frames hold the password: the rendered line
    (the last step) carries neither the password nor any local variable."""
    password = "pw-Zr8s-5cret"
    url = f"postgresql://app:{password}@db.example.com:5432/dialer"
    out = io.StringIO()
    configure_logging("info", fmt, secrets=url_secrets(url), stream=out)
    logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=_exc_info(url, password))
    structlog.get_logger("t").exception("boom", exc_info=_exc_info(url, password))
    text = out.getvalue()
    assert "ConnectionError" in text and "cannot reach" in text
    assert password not in text
    assert "local-value-marker" not in text  # no frame locals


def test_secrets_split_by_colour_codes_are_still_redacted() -> None:
    """A colouring renderer may put escape sequences inside a value: the text pass
    still finds the secret."""
    redactor = SecretRedactor(["s3cret-value"])
    coloured = "x=\x1b[32ms3cret\x1b[0m\x1b[1m-value\x1b[0m and s3cret-value"
    assert redactor.scrub_text(coloured) == "x=\x1b[32m[redacted]\x1b[0m and [redacted]"


def test_url_secrets_lists_the_url_and_both_forms_of_its_password() -> None:
    """The URL itself, its password as written (percent-encoded) and decoded."""
    url = "postgresql://app:p%3Fss%2Fw0rd@db:5432/x"
    assert url_secrets(url) == [url, "p%3Fss%2Fw0rd", "p?ss/w0rd"]
    assert url_secrets("") == []
