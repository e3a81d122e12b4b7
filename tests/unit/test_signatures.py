"""SignatureChecker against twilio's own RequestValidator (docs/webhooks.md): the same
answer for every URL form Twilio can sign, except that a signature for the URL with
a non-default port stripped is refused; and one HMAC in the usual case."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from dialer.signatures import SignatureChecker, signed_url_forms

TOKEN = "unit-test-token-8c1f"
PATH = "/twilio/status?call_id=6f1c2a4e-0d9b-4a3e-9d55-1c1e7a2b3c4d"
PARAMS = MultiDict([("CallSid", "CA1"), ("CallStatus", "completed"), ("Digits", "1"), ("Digits", "2")])
PUBLIC_URLS = [
    "https://dialer.example.com",
    "https://dialer.example.com:443",
    "http://dialer.example.com",
    "http://dialer.example.com:80",
    "http://dialer.example.com:8080",
    "https://dialer.example.com:8443/prefix",
    "http://127.0.0.1:8080",
]


def _variants(public_url: str) -> list[str]:
    """Every spelling of the host a signature might have been made for, the
    port-less one first."""
    parts = urlsplit(public_url)
    return [f"{parts.scheme}://{parts.hostname}{port}{parts.path}" for port in ("", ":80", ":443", ":8080", ":8443")]


@pytest.mark.parametrize("public_url", PUBLIC_URLS)
def test_same_answer_as_request_validator_except_for_a_stripped_port(public_url: str) -> None:
    """For each URL a signature may have been computed over, the checker agrees with
    RequestValidator.validate — except that with a non-default port configured, a
    signature for the URL without that port is refused (RequestValidator takes it)."""
    validator = RequestValidator(TOKEN)
    checker = SignatureChecker(validator)
    url = public_url + PATH
    parts = urlsplit(public_url)
    nondefault_port = parts.port not in (None, {"http": 80, "https": 443}[parts.scheme])
    for signed_for in _variants(public_url):
        signature = validator.compute_signature(signed_for + PATH, PARAMS)
        theirs = validator.validate(url, PARAMS, signature)
        ours = checker.valid(url, PARAMS, signature)
        stripped = nondefault_port and signed_for == _variants(public_url)[0]
        if stripped:
            assert theirs and not ours, signed_for
        else:
            assert ours == theirs, (public_url, signed_for)


def test_the_port_twins_are_accepted_and_nothing_else() -> None:
    """https://x/ and https://x:443/ sign the same address; http://x:8080 has no twin."""
    assert signed_url_forms("https://x.example/p") == ("https://x.example/p", "https://x.example:443/p")
    assert signed_url_forms("https://x.example:443/p") == ("https://x.example:443/p", "https://x.example/p")
    assert signed_url_forms("http://x.example/p") == ("http://x.example/p", "http://x.example:80/p")
    assert signed_url_forms("http://x.example:8080/p") == ("http://x.example:8080/p",)


class CountingValidator(RequestValidator):  # type: ignore[misc]
    """RequestValidator, counting the HMACs it computes."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.computed = 0

    def compute_signature(self, uri: str, params: Any, algorithm: str | None = None) -> str:
        """Count, then compute as twilio does."""
        self.computed += 1
        return str(super().compute_signature(uri, params, algorithm))


def test_one_hmac_for_a_signature_over_the_configured_url() -> None:
    """A signature over the URL as configured costs one HMAC (RequestValidator always
    computes two); the default-port twin costs a second one only when needed."""
    counting = CountingValidator(TOKEN)
    checker = SignatureChecker(counting)
    url = "https://dialer.example.com" + PATH
    signature = RequestValidator(TOKEN).compute_signature(url, PARAMS)
    assert checker.valid(url, PARAMS, signature)
    assert counting.computed == 1
    counting.computed = 0
    counting.validate(url, PARAMS, signature)
    assert counting.computed == 2
    counting.computed = 0
    twin = RequestValidator(TOKEN).compute_signature("https://dialer.example.com:443" + PATH, PARAMS)
    assert checker.valid(url, PARAMS, twin)
    assert counting.computed == 2


def test_odd_signatures_are_invalid_not_errors() -> None:
    """A non-ASCII, empty or truncated signature is simply invalid."""
    checker = SignatureChecker(RequestValidator(TOKEN))
    url = "https://dialer.example.com" + PATH
    good = RequestValidator(TOKEN).compute_signature(url, PARAMS)
    for signature in ("ñ" * 28, "", good[:-1], good + "="):
        assert not checker.valid(url, PARAMS, signature)
