"""Merchant API keys: shown once, stored as SHA-256 hashes, looked up by hash.

Keys carry 190 random bits, so a fast hash is enough: nothing to brute-force. A valid key is
cached per process for ``api.key_cache_s`` seconds, which bounds how long a revoked key still
works (``flowpay merchants revoke-key``); refusals are never cached. Each request a valid key
makes is counted against its rate limit (``rate_limit.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, NamedTuple

from psycopg_pool import AsyncConnectionPool

from workers.api.errors import ApiError, rate_limited, unauthenticated
from workers.api.rate_limit import RateLimiter
from workers.api.shared_state import key_number
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


class Caller(NamedTuple):
    merchant_id: str
    key: int  # the API key's number in the shared tables (rate limit, stream quota)


class Authenticator:
    def __init__(
        self, pool: AsyncConnectionPool[Any], cache_s: float, limiter: RateLimiter
    ) -> None:
        self.pool = pool
        self.cache_s = cache_s
        self.limiter = limiter
        self._cache: dict[bytes, tuple[str, float]] = {}

    async def admit(self, authorization: str | None) -> Caller:
        """Who sent the request: 401 without a valid key, 429 when the key is over its rate
        limit (a refused request takes nothing from it)."""
        digest = key_hash(bearer_token(authorization))
        merchant_id = await self._merchant(digest)
        key = key_number(digest)
        wait = self.limiter.take(key)
        if wait:
            raise rate_limited(wait, self.limiter.per_s, self.limiter.burst)
        return Caller(merchant_id, key)

    async def merchant_for(self, authorization: str | None) -> str:
        """The merchant id behind the request's key, without counting a request; 401 if
        there is none."""
        return await self._merchant(key_hash(bearer_token(authorization)))

    async def _merchant(self, digest: bytes) -> str:
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
