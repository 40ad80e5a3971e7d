"""Merchant API keys: shown once, stored as SHA-256 hashes, looked up by hash.

Keys carry 190 random bits, so a fast hash is enough: nothing to brute-force. A valid key is
cached per process for ``api.key_cache_s`` seconds, which bounds how long a revoked key still
works (``flowpay merchants revoke-key``); refusals are never cached.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from workers.api.errors import ApiError, unauthenticated
from workers.core.sql import load_queries

KEY_PREFIX = "sk_live_"
Q = load_queries("workers.api")


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def key_hash(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise ApiError(
            401, "api_key_missing", "Send your API key as 'Authorization: Bearer <key>'",
            type_="authentication_error",
        )  # fmt: skip
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("The Authorization header must be 'Bearer <key>'")
    return token.strip()


class Authenticator:
    def __init__(self, pool: AsyncConnectionPool[Any], cache_s: float) -> None:
        self.pool = pool
        self.cache_s = cache_s
        self._cache: dict[bytes, tuple[str, float]] = {}

    async def merchant_for(self, authorization: str | None) -> str:
        """The merchant id behind the request's key; 401 if there is none."""
        digest = key_hash(bearer_token(authorization))
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self.pool.connection() as conn:
            cursor = await conn.execute(Q["api_key_lookup"], {"key_hash": digest})
            row = await cursor.fetchone()
        if row is None or not hmac.compare_digest(bytes(row[1]), digest):
            raise unauthenticated("Invalid API key")
        merchant_id = str(row[0])
        if self.cache_s > 0:
            self._cache[digest] = (merchant_id, time.monotonic() + self.cache_s)
        return merchant_id
