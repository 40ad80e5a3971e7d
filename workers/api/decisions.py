"""Capturing and canceling a payment authorized with ``capture_method: manual``.

As Stripe's PaymentIntents: only a payment at ``requires_capture`` may be captured (all of what
is held, or less: the rest is released) or canceled; any other status is ``409
payment_invalid_state`` naming it. A request taken moves the payment to ``processing`` and
stages its event (``payment.capture_requested``, ``payment.cancel_requested``) in one
transaction, under the payment's row lock, so that of a capture and a cancel sent together only
one is taken. The saga orchestrator does the rest: the gateway's capture or void, then
``succeeded`` or ``canceled``. Both take an ``Idempotency-Key`` with the payments' semantics.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from workers.api import handling, openapi
from workers.api.errors import ApiError, codes, not_found
from workers.api.idempotency import Answer
from workers.api.payments import SOURCE, check_lookable, dumps, payment_object
from workers.api.schemas import CancelCreate, CaptureCreate
from workers.core import correlation
from workers.core.config import Settings
from workers.core.events import (
    CancelRequested,
    CaptureRequested,
    EventData,
    EventType,
    new_event,
)
from workers.core.outbox import stage_async
from workers.core.sql import load_queries
from workers.core.status import CancellationReason, PaymentStatus

Q = load_queries("workers.api")
log = logging.getLogger(__name__)
_BY_ID: Final = "$response.body#/id"


def invalid_state(payment_id: str, doing: str, status: str) -> ApiError:
    return ApiError(
        409,
        "payment_invalid_state",
        f"Payment {payment_id} cannot be {doing}: it is {status}, not requires_capture",
    )


async def capture(
    conn: AsyncConnection[Any],
    merchant_id: str,
    payment_id: str,
    body: CaptureCreate,
    correlation_id: str,
) -> Answer:
    """Take a capture of ``body.amount_to_capture`` (default: all of what is held)."""
    capturable = await _requires_capture(conn, merchant_id, payment_id, "captured")
    amount = body.amount_to_capture or capturable
    if amount > capturable:
        raise ApiError(
            422,
            "amount_too_large",
            f"amount_to_capture: at most {capturable} is authorized",
            param="amount_to_capture",
        )
    data = CaptureRequested(amount_to_capture=amount)
    return await _take(conn, merchant_id, payment_id, data, correlation_id, None)


async def cancel(
    conn: AsyncConnection[Any],
    merchant_id: str,
    payment_id: str,
    body: CancelCreate,
    correlation_id: str,
) -> Answer:
    """Take a cancel: the authorization is voided and the payment canceled."""
    await _requires_capture(conn, merchant_id, payment_id, "canceled")
    reason = body.reason()
    data = CancelRequested(cancellation_reason=reason)
    return await _take(conn, merchant_id, payment_id, data, correlation_id, reason)


async def _requires_capture(
    conn: AsyncConnection[Any], merchant_id: str, payment_id: str, doing: str
) -> int:
    """What the payment holds, once it is locked and found at ``requires_capture``."""
    check_lookable(payment_id)
    cursor = await conn.execute(
        Q["payment_lock_for_decision"], {"id": payment_id, "merchant_id": merchant_id}
    )
    row = await cursor.fetchone()
    if row is None:
        raise not_found("payment")
    status, capturable = row
    if status != PaymentStatus.REQUIRES_CAPTURE:
        raise invalid_state(payment_id, doing, str(status))
    return int(capturable)


async def _take(
    conn: AsyncConnection[Any],
    merchant_id: str,
    payment_id: str,
    data: EventData,
    correlation_id: str,
    reason: CancellationReason | None,
) -> Answer:
    type_ = (
        EventType.CAPTURE_REQUESTED
        if isinstance(data, CaptureRequested)
        else EventType.CANCEL_REQUESTED
    )
    event = new_event(
        type_,
        payment_id=payment_id,
        merchant_id=merchant_id,
        data=data,
        source=SOURCE,
        correlation_id=correlation_id,
    )
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            Q["payment_decision_taken"],
            {
                "id": payment_id,
                "at": event.occurred_at,
                "cancellation_reason": None if reason is None else reason.value,
            },
        )
        row = await cursor.fetchone()
        assert row is not None  # locked by _requires_capture
        await stage_async(cursor, "api", [event])
    log.info("%s taken", type_.value, extra=correlation.of_event(event))
    return Answer(202, dumps(payment_object(row)), f"/v1/payments/{payment_id}")


def router(settings: Settings) -> APIRouter:
    """``POST /v1/payments/{id}/capture`` and ``/cancel``."""
    limit = settings.api.max_body_bytes
    routes = APIRouter()

    @routes.post(
        "/v1/payments/{payment_id}/capture",
        status_code=202,
        **openapi.operation(
            "capturePayment",
            "Capture a payment authorized with capture_method manual (all of it, or less)",
            tag="payments", body=CaptureCreate, body_bytes=limit,
            errors=codes("resource_missing", "payment_invalid_state", "amount_too_large"),
            answers={"202": _accepted("the capture is under way")},
        ),
    )  # fmt: skip
    async def capture_payment(request: Request, payment_id: openapi.PaymentId) -> Response:
        async def act(
            conn: AsyncConnection[Any], merchant_id: str, body: CaptureCreate, correlation_id: str
        ) -> Answer:
            return await capture(conn, merchant_id, payment_id, body, correlation_id)

        return await handling.idempotent_post(request, limit, CaptureCreate, act)

    @routes.post(
        "/v1/payments/{payment_id}/cancel",
        status_code=202,
        **openapi.operation(
            "cancelPayment",
            "Cancel a payment authorized with capture_method manual: its authorization is voided",
            tag="payments", body=CancelCreate, body_bytes=limit,
            errors=codes("resource_missing", "payment_invalid_state"),
            answers={"202": _accepted("the cancel is under way")},
        ),
    )  # fmt: skip
    async def cancel_payment(request: Request, payment_id: openapi.PaymentId) -> Response:
        async def act(
            conn: AsyncConnection[Any], merchant_id: str, body: CancelCreate, correlation_id: str
        ) -> Answer:
            return await cancel(conn, merchant_id, payment_id, body, correlation_id)

        return await handling.idempotent_post(request, limit, CancelCreate, act)

    return routes


def _accepted(what: str) -> dict[str, Any]:
    return openapi.json_answer(
        f"Accepted: the payment, processing ({what}); or, for a retry, as first answered",
        "Payment",
        headers={"Location": openapi.LOCATION, "Idempotent-Replayed": openapi.REPLAYED},
        links={"GetPayment": openapi.link("getPayment", _BY_ID, "Read it"),
               "StreamPaymentEvents": openapi.link("streamPaymentEvents", _BY_ID, "Follow it")},
    )  # fmt: skip
