"""Idempotency keys whose first request is still being processed.

Stripe answers a second request with such a key ``409 idempotency_key_in_use`` (safe to retry
later) rather than running both or waiting. A key is in use from its request's arrival until
its work is done or abandoned: through the latency, and through a timeout fault's hold, which
goes on after the client has given up. The store's transactions are what make a key create one
object; this only reproduces what a client sees while the first request is under way.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.gateway_sim.errors import SimError

Release = Callable[[], None]


def in_use() -> SimError:
    return SimError(
        409,
        "idempotency_key_in_use",
        "Another request with this Idempotency-Key is still being processed; retry later",
        type_="idempotency_error",
    )


class KeysInProgress:
    """One process's keys in use, per endpoint (each endpoint has its own key namespace)."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()

    def claim(self, endpoint: str, key: str) -> Release:
        """Mark the key in use; SimError 409 if it already is. Call the result once done."""
        entry = (endpoint, key)
        if entry in self._keys:
            raise in_use()
        self._keys.add(entry)
        return lambda: self._keys.discard(entry)
