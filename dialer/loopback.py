"""Whether an address stays on this machine (docs/carrier.md#where-the-simulator-sends-requests).

Only literal loopback addresses and the name `localhost` count: resolving other names
would let DNS answer differently at check time and at connect time."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback_host", "is_loopback_url"]


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (bracketed or not); False for
    anything else, including the wildcard addresses 0.0.0.0 and ::."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """Whether an http(s) URL points at a loopback host."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and is_loopback_host(parts.hostname or "")
    except ValueError:
        return False
