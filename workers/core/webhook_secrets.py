"""Webhook signing secrets sealed for their endpoint (AES-256-GCM, ``workers.core.sealing``).

A secret is sealed for its endpoint's id, so that a sealed value moved to another endpoint does
not open. The API seals a new secret before it goes into its endpoint event (nothing on Kafka
is in plain text: the endpoints topic keeps its messages, and a dead-lettered one is copied);
the notifier stores the sealed value as it came, and opens it to sign.
"""

from __future__ import annotations

from workers.core.sealing import Keyring, Sealed


def _context(endpoint_id: str) -> bytes:
    return f"flowpay notifier.endpoints {endpoint_id} secret".encode()


def seal_webhook_secret(keys: Keyring, endpoint_id: str, secret: str) -> Sealed:
    return keys.seal(secret.encode(), _context(endpoint_id))


def open_webhook_secret(keys: Keyring, endpoint_id: str, sealed: Sealed) -> str:
    """The secret; SealError when its key is not configured or the value was altered."""
    return keys.open(sealed, _context(endpoint_id)).decode()
