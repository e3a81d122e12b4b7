"""Logs never carry secrets."""

from __future__ import annotations

import io
import json

import structlog

from dialer.logs import configure_logging


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
