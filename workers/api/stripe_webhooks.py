"""Stripe's webhooks in: ``POST /v1/gateway/stripe/webhooks``.

Each event is verified by its ``Stripe-Signature`` with the SDK (the endpoint's signing secret,
300 s of tolerance, so a captured request is worthless five minutes on), read for what it says
about a FlowPay payment or payout, and staged in ``api.outbox`` as ``gateway.reported`` for the
processor. Its FlowPay event id is derived from Stripe's event id: the outbox's unique event id
remembers what came in (longer than the tolerance), so a replay inside the window stages
nothing, and a consumer meeting one again dedupes it by the same id.

A replayed or unrelated event (another type, a payment FlowPay never made) is answered 200 and
changes nothing: a non-2xx answer only makes Stripe send it again for days. Unsigned, wrongly
signed or stale ones are refused with 400.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Final, get_args

import stripe
from fastapi import APIRouter, Request, Response
from psycopg import AsyncConnection
from pydantic import ValidationError

from workers.api.errors import ApiError
from workers.api.payments import dumps
from workers.api.services import services_of
from workers.core.config import Settings
from workers.core.events import (
    Event,
    EventType,
    GatewayEventType,
    GatewayReported,
    new_event,
)
from workers.core.outbox import insert_statement, outbox_row
from workers.core.sql import load_queries
from workers.core.stripe_terms import (
    MERCHANT_REFERENCE,
    PAYMENT_REFERENCE,
    PAYOUT_REFERENCE,
    as_code,
    failure_reason,
    reference_of,
)

log = logging.getLogger(__name__)
Q = load_queries("workers.api")

PATH: Final = "/v1/gateway/stripe/webhooks"
TOLERANCE_S: Final = 300
# Stripe's event bodies carry one object: a few KiB, far below this.
MAX_BODY_BYTES: Final = 256 * 1024
SOURCE: Final = "api.stripe_webhooks"
# FlowPay's event id of a Stripe event: the same on every delivery of it.
_EVENT_IDS: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://api.stripe.com/v1/events")
REPORTED: Final = frozenset(get_args(GatewayEventType))


class Reported:
    """A verified Stripe event about a FlowPay payment (or payout), ready to stage."""

    def __init__(self, reference: str, report: GatewayReported, merchant: str | None) -> None:
        self.reference = reference  # the FlowPay payment (or payout) id
        self.report = report
        self.merchant = merchant  # a payout's, from its metadata; a payment's is looked up


def router(settings: Settings) -> APIRouter:
    """The webhook route; without ``gateway.stripe.webhook_secret`` it answers 404."""
    secret = settings.gateway.stripe.webhook_secret
    routes = APIRouter()

    @routes.post(PATH, include_in_schema=False)
    async def stripe_webhook(request: Request) -> Response:
        if secret is None:
            raise ApiError(404, "resource_missing", "Stripe webhooks are not configured")
        body = await _bounded_body(request)
        _verify(body, request.headers.get("stripe-signature"), secret.get_secret_value())
        reported = report_of(_parsed(body))
        staged = False
        if reported is not None:
            async with services_of(request).pool.connection() as conn:
                staged = await _stage(conn, reported)
        return Response(
            dumps({"received": True, "recorded": staged}), media_type="application/json"
        )

    return routes


async def _bounded_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(
                413, "request_too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _verify(body: bytes, header: str | None, secret: str) -> None:
    if not header:
        raise ApiError(400, "signature_missing", "Send the Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE_S)
    except stripe.SignatureVerificationError:
        # Which part failed (no signature, a wrong one, too old) is not the sender's to learn.
        raise ApiError(
            400, "signature_invalid", "Stripe-Signature does not verify or is too old"
        ) from None


def _parsed(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "body_invalid_json", "The body is not JSON") from None
    if not isinstance(event, dict):
        raise ApiError(422, "body_invalid", "The body is not a Stripe event")
    return event


def report_of(event: Mapping[str, Any]) -> Reported | None:
    """What a verified Stripe event says about FlowPay's payment or payout; None for an event
    FlowPay does not act on (another type, an object it did not create, a malformed one)."""
    kind = event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(kind, str) or kind not in REPORTED or not isinstance(obj, Mapping):
        return None
    payout = kind.startswith("payout.")
    reference = reference_of(obj, PAYOUT_REFERENCE if payout else PAYMENT_REFERENCE)
    if reference is None:
        return None
    try:
        report = GatewayReported(
            provider="stripe",
            gateway_event_id=event.get("id"),
            gateway_event_type=kind,
            object_id=obj.get("id"),
            status=obj.get("status"),
            amount=_amount(kind, obj),
            currency=_currency(obj.get("currency")),
            failure_reason=_failure(kind, obj),
            livemode=event.get("livemode") is True,
        )
    except ValidationError:
        log.warning("a Stripe event with malformed fields ignored", extra={"type": kind})
        return None
    merchant = reference_of(obj, MERCHANT_REFERENCE) if payout else None
    return Reported(reference, report, merchant)


def _amount(kind: str, obj: Mapping[str, Any]) -> int | None:
    field = {
        "payment_intent.succeeded": "amount_received",
        "payment_intent.amount_capturable_updated": "amount_capturable",
        "charge.refunded": "amount_refunded",
    }.get(kind, "amount")
    value = obj.get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _currency(value: object) -> str | None:
    return value.upper() if isinstance(value, str) and len(value) == 3 else None


def _failure(kind: str, obj: Mapping[str, Any]) -> str | None:
    if kind == "payment_intent.payment_failed":
        error = obj.get("last_payment_error")
        error = error if isinstance(error, Mapping) else {}
        return failure_reason(as_code(error.get("code")), as_code(error.get("decline_code")))
    if kind == "payout.failed":
        return as_code(obj.get("failure_code"))
    return None


async def _stage(conn: AsyncConnection[Any], reported: Reported) -> bool:
    """Stage the event once; False when its merchant is unknown or it was staged before."""
    merchant = await _merchant(conn, reported)
    if merchant is None:
        return False
    event = _event(reported, merchant)
    cursor = await conn.execute(insert_statement("api"), outbox_row(event))
    staged = cursor.rowcount == 1
    log.info(
        "stripe webhook staged" if staged else "stripe webhook seen before, nothing staged",
        extra={
            "payment_id": reported.reference,
            "gateway_event_id": reported.report.gateway_event_id,
        },
    )
    return staged


async def _merchant(conn: AsyncConnection[Any], reported: Reported) -> str | None:
    if reported.merchant is not None:
        cursor = await conn.execute(Q["merchant_exists"], {"id": reported.merchant})
        return reported.merchant if await cursor.fetchone() else None
    cursor = await conn.execute(Q["payment_merchant"], {"id": reported.reference})
    row = await cursor.fetchone()
    return str(row[0]) if row else None


def _event(reported: Reported, merchant: str) -> Event:
    event = new_event(
        EventType.GATEWAY_REPORTED,
        payment_id=reported.reference,
        merchant_id=merchant,
        data=reported.report,
        source=SOURCE,
    )
    event_id = uuid.uuid5(_EVENT_IDS, reported.report.gateway_event_id)
    return event.model_copy(update={"event_id": event_id})
