"""Secrets kept in the database, encrypted (sealed) with AES-256-GCM under a key FlowPay is given.

A sealed value is the key's id and ``nonce || ciphertext || tag``; the id (a fingerprint of the
key, not the key) says which configured key opens it. ``[secrets] key`` seals; it and
``[secrets] previous_keys`` open, so that a new key can be brought in while values sealed under
the old one are still read, and ``flowpay secrets rotate`` re-seals them under the new one.

Each value is sealed for a context (which column of which row it belongs to) that the tag
covers, so that a sealed value copied into another row does not open there.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from workers.core.config import AES_KEY_BYTES, Settings
from workers.core.errors import ConfigError, FlowPayError

NONCE_BYTES: Final = 12
_KEY_ID_LABEL: Final = b"flowpay secrets key id\0"


class SealError(FlowPayError):
    """A sealed value cannot be opened: its key is not configured, or it was altered."""


@dataclass(frozen=True)
class Sealed:
    key_id: str
    blob: bytes  # nonce || ciphertext || tag


def key_id(key: bytes) -> str:
    """A key's public name: 16 hex digits of a hash of it."""
    return hashlib.sha256(_KEY_ID_LABEL + key).hexdigest()[:16]


def generate_key() -> str:
    """A new key, as ``[secrets] key`` takes it: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(AES_KEY_BYTES)).decode()


class Keyring:
    """The current key, which seals, and every configured key, which open."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self.current_id = key_id(current)
        self._keys = {key_id(k): AESGCM(k) for k in (*previous, current)}

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    def knows(self, key: str) -> bool:
        return key in self._keys

    def seal(self, plaintext: bytes, context: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current_id].encrypt(nonce, plaintext, context)
        return Sealed(self.current_id, nonce + sealed)

    def open(self, sealed: Sealed, context: bytes) -> bytes:
        cipher = self._keys.get(sealed.key_id)
        if cipher is None:
            raise SealError(
                f"sealed under key {sealed.key_id}, which neither secrets.key nor "
                "secrets.previous_keys holds"
            )
        nonce, body = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, body, context)
        except InvalidTag:
            raise SealError(f"a value sealed under key {sealed.key_id} was altered") from None


def dev_key_file(settings: Settings) -> Path:
    """The dev stack's own key (``flowpay dev up`` makes it)."""
    return settings.dev.credentials / "secrets.key"


def keyring(settings: Settings) -> Keyring:
    """The configured keys; without ``[secrets] key``, the dev stack's own, and only with the dev
    stack's database. Raises ConfigError when there is none: a role that needs one cannot start."""
    configured = settings.secrets
    previous = [_raw(k.get_secret_value()) for k in configured.previous_keys]
    if configured.key is not None:
        return Keyring(_raw(configured.key.get_secret_value()), previous)
    if settings.database.local:
        path = dev_key_file(settings)
        try:
            key = _raw(path.read_text())
        except (OSError, ValueError):
            key = b""
        if len(key) != AES_KEY_BYTES:
            raise ConfigError(f"no secrets key in {path}: `flowpay dev up` makes it")
        return Keyring(key, previous)
    raise ConfigError(
        "secrets.key is not set: webhook signing secrets are stored encrypted with it. Set"
        " FLOWPAY_SECRETS__KEY (or [secrets] key) to base64 of 32 random bytes, the same for"
        " every role; `flowpay secrets generate-key` makes one"
    )


def _raw(key: str) -> bytes:
    # Validated when the settings were read (workers.core.config); the dev key file is ours.
    return base64.b64decode(key.strip())
