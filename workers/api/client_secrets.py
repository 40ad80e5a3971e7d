"""Client secrets: what lets a merchant's checkout page, in a customer's browser, follow one
payment's status without the merchant's API key (Stripe's PaymentIntent ``client_secret``).

``POST /v1/payments`` answers with ``<payment id>_secret_<random>`` (and the merchant's own
``GET`` shows it again). With it, and nothing else, a browser may read that one payment
(``GET /v1/payments/{id}?client_secret=``, a reduced view) and follow it
(``GET /v1/payments/{id}/events?client_secret=``); a wrong secret, another payment's, or a
payment that does not exist are refused alike, so a refusal says nothing of whether the payment
exists. A page on another origin may use it only if the merchant allowed that origin (CORS,
``flowpay merchants set-origins``): a request whose ``Origin`` is not allowed is refused, and
only an allowed one is named in ``Access-Control-Allow-Origin``.

The secret is kept as it is (the merchant reads it back, as from Stripe) and compared in
constant time; 144 random bits leave nothing to guess. It is counted against the API's rate
limit as a key of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Final, NamedTuple

from workers.api.errors import AUTHENTICATION, ApiError, rate_limited
from workers.api.services import Services
from workers.api.shared_state import key_number
from workers.core.sql import load_queries

Q = load_queries("workers.api")
SEPARATOR: Final = "_secret_"
MAX_LENGTH: Final = 255
PARAM: Final = "client_secret"
# What a browser sees of a payment: nothing of the merchant's own (method, metadata, ...);
# next_action, so that a checkout page can take its customer through 3-D Secure (Stripe's too).
VIEW_FIELDS: Final = (
    "id", "object", "status", "amount", "currency", "failure_reason", "next_action",
)  # fmt: skip
# Compared with when no payment matches, so that a refusal takes as long either way.
_NOBODY: Final = b"pay_nobody" + SEPARATOR.encode() + b"x" * 24


def new_client_secret(payment_id: str) -> str:
    return f"{payment_id}{SEPARATOR}{secrets.token_urlsafe(18)}"


def browser_view(payment: dict[str, Any]) -> dict[str, Any]:
    """The reduced view of a payment that its client secret may read."""
    return {name: payment[name] for name in VIEW_FIELDS}


class Browser(NamedTuple):
    """A request admitted by its client secret."""

    merchant_id: str
    key: int  # the secret's number in the shared tables (rate limit, stream quota)
    origin: str | None  # the allowed Origin it came from, for Access-Control-Allow-Origin

    def cors_headers(self) -> dict[str, str]:
        if self.origin is None:
            return {}
        return {"Access-Control-Allow-Origin": self.origin, "Vary": "Origin"}


def refused() -> ApiError:
    return ApiError(
        401, "client_secret_invalid", "This client secret does not open this payment",
        param=PARAM, type_=AUTHENTICATION,
    )  # fmt: skip


def origin_refused() -> ApiError:
    return ApiError(
        403, "origin_not_allowed", "Pages of this origin may not use this payment's client secret",
        param="Origin",
    )  # fmt: skip


async def admit(services: Services, payment_id: str, secret: str, origin: str | None) -> Browser:
    """The payment's merchant, when ``secret`` is the payment's and ``origin`` (a browser's
    ``Origin``, if any) one the merchant allows; 401 or 403 otherwise, 429 over the rate limit."""
    row = None
    if secret.startswith(payment_id + SEPARATOR) and "\x00" not in secret:
        async with services.pool.connection() as conn:
            cursor = await conn.execute(Q["client_secret_access"], {"id": payment_id})
            row = await cursor.fetchone()
    merchant_id, stored, allowed = row if row is not None else (None, None, [])
    matches = hmac.compare_digest((stored or "").encode() or _NOBODY, secret.encode())
    if merchant_id is None or stored is None or not matches:
        raise refused()
    if origin is not None and origin not in allowed:
        raise origin_refused()
    key = key_number(hashlib.sha256(secret.encode()).digest())
    limiter = services.auth.limiter
    wait = limiter.take(key)
    if wait:
        raise rate_limited(wait, limiter.per_s, limiter.burst)
    return Browser(str(merchant_id), key, origin)
