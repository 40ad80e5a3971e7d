"""Object ids: a prefix and 26 Crockford base32 characters, sortable by creation time.

48 bits of milliseconds since the epoch, then 80 random bits (the ULID layout), so that
``ORDER BY id DESC`` is newest first and ids can serve as pagination cursors.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BODY = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(prefix: str, text: str) -> bool:
    head, sep, body = text.partition("_")
    return sep == "_" and head == prefix and bool(_BODY.match(body))


def derived_key(namespace: str, value: str) -> str:
    """A deterministic idempotency key for calls made on behalf of ``value``."""
    return f"{namespace}-{hashlib.sha256(value.encode()).hexdigest()[:32]}"
