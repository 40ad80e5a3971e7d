"""Payment intake: create, read, list and refund, as the HTTP API and the CLI do them.

Creating a payment stores its intent and the event that creates it (in ``api.outbox``) in one
transaction: ``payment.initiated`` (automatic capture) or ``payment.authorization_requested``
(manual capture); refunds store the request and ``payment.refund_requested`` likewise. The
orchestrator decides what happens next; this service learns it back from the event log.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from workers.api.client_secrets import new_client_secret
from workers.api.errors import ApiError, not_found
from workers.api.idempotency import Answer, earlier_answer, in_use, lock_id
from workers.api.schemas import PaymentCreate, RefundCreate
from workers.core import correlation
from workers.core.events import EventType, Initiated, RefundRequested, new_event
from workers.core.ids import new_id
from workers.core.outbox import outbox_row, stage_async
from workers.core.projection import iso
from workers.core.sql import load_queries
from workers.core.status import CaptureMethod, PaymentStatus

Q = load_queries("workers.api")
log = logging.getLogger(__name__)
SOURCE: Final = "flowpay/api"
STATUSES: Final = tuple(status.value for status in PaymentStatus)


# One encoder for every answer: json.dumps with options builds a new one at each call.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(payload: Any) -> bytes:
    return _COMPACT.encode(payload).encode()


def merchant_view(row: dict[str, Any]) -> dict[str, Any]:
    """The payment as its merchant reads it: with the client secret to hand to its page."""
    return {**payment_object(row), "client_secret": row["client_secret"]}


def payment_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "payment",
        "status": row["status"],
        "amount": row["amount"],
        "currency": row["currency"],
        "payment_method": row["payment_method"],
        "description": row["description"],
        "metadata": row["metadata"],
        "capture_method": row["capture_method"],
        "amount_capturable": row["amount_capturable"],
        "amount_received": row["amount_received"],
        "refunded_amount": row["refunded_amount"],
        "failure_reason": row["failure_reason"],
        "cancellation_reason": row["cancellation_reason"],
        "next_action": row.get("next_action"),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


async def create_payment(
    pool: AsyncConnectionPool[Any],
    merchant_id: str,
    idempotency_key: str,
    fingerprint: bytes,
    body: PaymentCreate,
    correlation_id: str,
) -> Answer:
    """Store the intent, its event and its answer once per (merchant, key), in one statement.

    A repeated request gets the stored answer (idempotency.earlier_answer decides how).
    """
    now = datetime.now(UTC)
    payment_id = new_id("pay")
    fields = body.model_dump(exclude={"capture_method"})
    manual = body.capture_method == CaptureMethod.MANUAL.value
    event = new_event(
        EventType.AUTHORIZATION_REQUESTED if manual else EventType.INITIATED,
        payment_id=payment_id,
        merchant_id=merchant_id,
        data=Initiated(**fields),
        source=SOURCE,
        correlation_id=correlation_id,
    )
    params = {**fields, "id": payment_id, "merchant_id": merchant_id, "created_at": now,
              "capture_method": body.capture_method,
              "client_secret": new_client_secret(payment_id)}  # fmt: skip
    row = {**params, "status": PaymentStatus.INITIATED, "refunded_amount": 0,
           "failure_reason": None, "updated_at": now, "amount_capturable": 0,
           "amount_received": 0, "cancellation_reason": None}  # fmt: skip
    answer = Answer(202, dumps(merchant_view(row)), f"/v1/payments/{payment_id}")
    event_id, message_key, value, headers = outbox_row(event)
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                Q["payment_create"],
                {**params, "metadata": Jsonb(body.metadata), "key": idempotency_key,
                 "lock": lock_id(merchant_id, idempotency_key), "event_id": event_id,
                 "message_key": message_key, "value": value, "headers": headers,
                 "request_hash": fingerprint, "status": answer.status, "body": answer.body,
                 "location": answer.location},
            )  # fmt: skip
            begun = await cursor.fetchone()
    except pg_errors.UniqueViolation:
        # The key's first request committed after this statement's snapshot was taken.
        raise in_use() from None
    earlier = earlier_answer(begun, fingerprint)
    if earlier is None:
        log.info("payment accepted", extra=correlation.of_event(event))
    return earlier or answer


def check_lookable(payment_id: str, param: str = "id") -> None:
    """The 404 of a missing payment for what no payment id can hold: PostgreSQL
    cannot even compare a text holding U+0000 (it would be a 500)."""
    if "\x00" in payment_id:
        raise not_found("payment", param=param)


async def get_payment(
    pool: AsyncConnectionPool[Any], merchant_id: str, payment_id: str
) -> dict[str, Any]:
    check_lookable(payment_id)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            Q["payment_get"], {"id": payment_id, "merchant_id": merchant_id}
        )
        row = await cursor.fetchone()
        names = [c.name for c in cursor.description or ()]
    if row is None:
        raise not_found("payment")
    return merchant_view(dict(zip(names, row, strict=True)))


async def list_payments(
    pool: AsyncConnectionPool[Any],
    merchant_id: str,
    *,
    limit: int,
    starting_after: str | None,
    status: str | None,
) -> dict[str, Any]:
    params = {
        "merchant_id": merchant_id,
        "limit": limit + 1,
        "starting_after": starting_after,
        "status": status,
    }
    if starting_after is not None:
        check_lookable(starting_after, param="starting_after")
    async with pool.connection() as conn:
        if starting_after is not None:
            found = await conn.execute(
                Q["payment_exists"], {"id": starting_after, "merchant_id": merchant_id}
            )
            if await found.fetchone() is None:
                raise not_found("payment", param="starting_after")
        query = Q["payments_list" if starting_after is None else "payments_list_after"]
        cursor = await conn.execute(query, params)
        rows = await cursor.fetchall()
        names = [c.name for c in cursor.description or ()]
    data = [payment_object(dict(zip(names, r, strict=True))) for r in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit}


async def request_refund(
    conn: AsyncConnection[Any],
    merchant_id: str,
    payment_id: str,
    body: RefundCreate,
    correlation_id: str,
) -> Answer:
    check_lookable(payment_id)
    cursor = await conn.execute(Q["payment_lock"], {"id": payment_id, "merchant_id": merchant_id})
    row = await cursor.fetchone()
    if row is None:
        raise not_found("payment")
    status, received, _currency, refunded, pending = row
    left = int(received) - int(refunded) - int(pending)
    if status != PaymentStatus.SUCCEEDED or left <= 0:
        why = (
            f"it is {status}" if status != PaymentStatus.SUCCEEDED else "nothing is left to refund"
        )
        raise ApiError(
            409, "payment_not_refundable", f"Payment {payment_id} cannot be refunded: {why}"
        )
    refund_amount = body.amount if body.amount is not None else left
    if refund_amount > left:
        raise ApiError(
            422, "amount_too_large", f"amount: at most {left} is left to refund", param="amount"
        )
    return await _record_refund(
        conn, merchant_id, payment_id, refund_amount, body.reason, correlation_id
    )


async def _record_refund(
    conn: AsyncConnection[Any],
    merchant_id: str,
    payment_id: str,
    amount: int,
    reason: str | None,
    correlation_id: str,
) -> Answer:
    now = datetime.now(UTC)
    refund_id = new_id("re")
    event = new_event(
        EventType.REFUND_REQUESTED,
        payment_id=payment_id,
        merchant_id=merchant_id,
        data=RefundRequested(refund_id=refund_id, amount=amount, reason=reason),
        source=SOURCE,
        correlation_id=correlation_id,
    )
    await conn.execute(
        Q["refund_insert"],
        {
            "id": refund_id,
            "payment_id": payment_id,
            "amount": amount,
            "reason": reason,
            "created_at": now,
        },
    )
    async with conn.cursor() as cursor:
        await stage_async(cursor, "api", [event])
    log.info("refund requested", extra=correlation.of_event(event))
    refund = {
        "id": refund_id,
        "object": "refund",
        "payment_id": payment_id,
        "amount": amount,
        "reason": reason,
        "status": "requested",
        "created_at": iso(now),
    }
    return Answer(202, dumps(refund))
