"""Webhooks as FlowPay sends them: their body, and Standard Webhooks signatures (the scheme
Svix uses), for FlowPay (the notifier, ``flowpay listen``) and for merchants.

FlowPay signs ``"<webhook-id>.<webhook-timestamp>.<body>"`` with HMAC-SHA256 under the
endpoint's secret (``whsec_`` + base64 key) and sends ``webhook-signature: v1,<base64>``.
A merchant verifies a delivery with::

    from workers.core.webhooks import verify
    event = verify(request_body_bytes, request.headers, "whsec_...")  # raises InvalidSignature

``verify`` refuses timestamps more than five minutes from now (replays), compares in constant
time, and accepts any one of several space-separated signatures. FlowPay sends several while an
endpoint's secret is being rotated: one by each secret that still signs, newest first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from workers.core.projection import iso

PREFIX: Final = "whsec_"
TOLERANCE_S: Final = 300


class InvalidSignature(Exception):
    """The delivery was not signed with this secret, or is too old or too new."""


def webhook_body(event_type: str, occurred_at: datetime, payment: dict[str, Any]) -> bytes:
    """A webhook's JSON: the event's type and moment, and the payment just after it."""
    body = {"type": event_type, "timestamp": iso(occurred_at), "data": payment}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secrets: str | Sequence[str], webhook_id: str, body: bytes, now: int | None = None
) -> dict[str, str]:
    """The headers of one attempt, signed by each of ``secrets`` (one or several)."""
    timestamp = int(time.time()) if now is None else now
    signing = [secrets] if isinstance(secrets, str) else list(secrets)
    if not signing:
        raise ValueError("a webhook needs a secret to sign it")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, webhook_id, timestamp, body) for s in signing),
    }


def verify(
    body: bytes, received: Mapping[str, str], secret: str, *, now: float | None = None
) -> Any:
    """The delivery's JSON, if it is signed with ``secret`` within the tolerance."""
    lowered = {k.lower(): v for k, v in received.items()}
    try:
        webhook_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        raise InvalidSignature("missing or malformed webhook headers") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > TOLERANCE_S:
        raise InvalidSignature("timestamp outside the tolerance")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, s.encode()) for s in signatures):
        raise InvalidSignature("no matching signature")
    return json.loads(body)
