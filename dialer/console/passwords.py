"""The console's operator password, stored as a salted scrypt hash (stdlib `hashlib`),
so the configuration never holds the password itself.

Format: `scrypt$N$r$p$<salt base64>$<hash base64>` — `dialer console hash-password`
prints one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
# Interactive-login cost (about 50 ms and 16 MiB here): slow for a guesser, fine for a person.
N, R, P = 2**14, 8, 1
KEY_BYTES = 32
MAX_MEMORY = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A new hash of `password` with a random salt."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=N, r=R, p=P, dklen=KEY_BYTES, maxmem=MAX_MEMORY
    )
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(key)}"


def check_hash_format(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """Parse a stored hash; ValueError naming what is wrong."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError(
            "is not a password hash from `dialer console hash-password` (scrypt$N$r$p$salt$hash)"
        )
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise ValueError("is a malformed scrypt hash (bad number or base64)") from None
    if n < 2 or n & (n - 1) or not (1 <= r <= 32) or not (1 <= p <= 16) or not salt or not key:
        raise ValueError("has out-of-range scrypt parameters")
    if 128 * n * r > MAX_MEMORY:
        raise ValueError("asks scrypt for more memory than allowed (lower N or r)")
    return n, r, p, salt, key


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches the stored hash (compared in constant time)."""
    n, r, p, salt, key = check_hash_format(encoded)
    candidate = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=MAX_MEMORY
    )
    return hmac.compare_digest(candidate, key)
