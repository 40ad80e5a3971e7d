"""Idempotency keys, scoped to (merchant, key), in the spirit of Stripe's.

One transaction per request: take the key's advisory lock (another request holding it -> 409
``idempotency_key_in_use``), read what a finished request with the key answered (same request
-> that answer byte for byte; another request -> 422 ``idempotency_key_reused``), else do the
work and store its answer in the same transaction as the work itself. A request that fails
before or during the work stores nothing, so its key can be used again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from workers.api.errors import ApiError
from workers.core.sql import load_queries

Q = load_queries("workers.api")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    location: str | None = None
    replayed: bool = False
    # What a retry with the key gets instead of ``body``: the answer without a secret it
    # showed, which is shown once (None: the body itself).
    stored: bytes | None = None


Work = Callable[[AsyncConnection[Any]], Awaitable[Answer]]


# Built once: json.dumps with options builds a new encoder at each call. Its output must
# never change, or stored keys would stop matching their retries.
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def request_hash(method: str, path: str, canonical_body: Any) -> bytes:
    body = _CANONICAL.encode(canonical_body)
    return hashlib.sha256(f"{method}\n{path}\n{body}".encode()).digest()


def lock_id(*parts: str) -> int:
    """The advisory lock of ``parts``: (merchant, key) is held by the one transaction working on
    that request; ("webhook_endpoints", merchant) by one adding an endpoint for the merchant."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def run_once(
    pool: AsyncConnectionPool[Any], merchant_id: str, key: str, fingerprint: bytes, work: Work
) -> Answer:
    """Do ``work`` once per (merchant, key); later identical requests get its stored answer."""
    ids = {"merchant_id": merchant_id, "key": key}
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            Q["idempotency_begin"], {**ids, "lock": lock_id(merchant_id, key)}
        )
        replayed = earlier_answer(await cursor.fetchone(), fingerprint)
        if replayed is not None:
            return replayed
        answer = await work(conn)
        try:
            await conn.execute(
                Q["idempotency_insert"],
                {**ids, "request_hash": fingerprint, "status": answer.status,
                 "body": answer.body if answer.stored is None else answer.stored,
                 "location": answer.location},
            )  # fmt: skip
        except pg_errors.UniqueViolation:
            raise in_use() from None
        return answer


def earlier_answer(begun: tuple[Any, ...] | None, fingerprint: bytes) -> Answer | None:
    """What an ``idempotency_begin`` row says: None when this request is the key's first.

    The row is (locked, stored hash, status, body, location); another request holding the
    lock, or a different request stored under the key, is an ApiError.
    """
    locked, stored_hash, status, body, location = begun or (False,) * 5
    if not locked:
        raise in_use()
    if stored_hash is None:
        return None
    if bytes(stored_hash) != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request",
        )
    if status is None:
        raise in_use()
    return Answer(int(status), bytes(body), location, replayed=True)


def in_use() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still in flight; retry it shortly",
    )
