"""Twilio request signatures, checked only for the URL forms Twilio can have signed
(docs/webhooks.md#the-gate-every-twilio-request-passes-in-order).

Twilio signs the URL it was given, and sometimes the same URL with the scheme's
default port written out (or left out). `twilio.request_validator.RequestValidator`
accepts both, but it also accepts the URL with *any* port removed: with a public URL
of `http://x:8080` it takes a signature made for `http://x`, a different address.
`SignatureChecker` accepts the form as configured and, only when the port is absent
or the scheme's default, the other spelling of that same port. Everything else is
RequestValidator's: the string signed, the HMAC, the parameter ordering.

It also computes one HMAC per request in the usual case: the URL as given first
(unparsed), the other spellings only when that did not match.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlparse

from twilio.request_validator import RequestValidator, add_port, remove_port

__all__ = ["SignatureChecker", "signed_url_forms"]

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def signed_url_forms(url: str) -> tuple[str, ...]:
    """The URLs a signature for `url` may have been computed over, the form as given
    first: with the port absent or the scheme's default, both spellings of it; with
    any other port, that URL only."""
    parsed = urlparse(url)
    port = parsed.port
    as_given = parsed.geturl()
    if port is None:
        return (as_given, str(add_port(parsed)))
    if port == DEFAULT_PORTS.get(parsed.scheme):
        return (as_given, str(remove_port(parsed)))
    return (as_given,)


class SignatureChecker:
    """Validates `X-Twilio-Signature` for requests to one public URL."""

    def __init__(self, validator: RequestValidator) -> None:
        self._validator = validator  # RequestValidator(auth_token): the string signed and the HMAC

    def valid(self, url: str, params: Mapping[str, str], signature: str) -> bool:
        """Whether `signature` signs `params` for `url` (or its default-port twin).
        Odd input (a non-ASCII signature, a malformed port) is simply invalid.

        The URL exactly as given is tried first, unparsed (as RequestValidator does):
        it is the form Twilio signs for the address it was given, so the usual
        request costs one HMAC and no URL parsing; the other forms only after it."""
        try:
            expected = signature.encode("ascii")
            if self._signs(url, params, expected):
                return True
            return any(self._signs(form, params, expected) for form in signed_url_forms(url) if form != url)
        except (UnicodeError, ValueError):
            return False

    def _signs(self, url: str, params: Mapping[str, str], expected: bytes) -> bool:
        computed = str(self._validator.compute_signature(url, params)).encode("ascii")
        return hmac.compare_digest(computed, expected)
