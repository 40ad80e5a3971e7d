"""What the operator's CLI does through the API service's own code paths (no HTTP)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from workers.api.errors import ApiError
from workers.api.idempotency import Answer, request_hash, run_once
from workers.api.payments import payment_object, request_refund
from workers.api.schemas import RefundCreate
from workers.core.config import Settings
from workers.core.db import database_url
from workers.core.errors import NotFoundError
from workers.core.sql import load_queries

Q = load_queries("workers.api")


def payment_view(conn: Connection[Any], payment_id: str) -> dict[str, Any]:
    """The API's view of a payment (any merchant's), as GET /v1/payments/<id> shows it."""
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(Q["payment_any"], {"id": payment_id}).fetchone()
    if row is None:
        raise NotFoundError(f"no payment {payment_id}")
    return {**payment_object(row), "merchant_id": row["merchant_id"]}


def refund_status(conn: Connection[Any], refund_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(Q["refund_any"], {"id": refund_id}).fetchone()
    if row is None:
        raise NotFoundError(f"no refund {refund_id}")
    return dict(row)


def request_refund_as_operator(
    settings: Settings, payment_id: str, amount: int | None, reason: str | None, key: str | None
) -> dict[str, Any]:
    """Record a refund request exactly as POST /v1/payments/<id>/refunds does, for its merchant."""
    body = RefundCreate(amount=amount, reason=reason)
    return asyncio.run(_refund(settings, payment_id, body, key or str(uuid.uuid4())))


async def _refund(
    settings: Settings, payment_id: str, body: RefundCreate, key: str
) -> dict[str, Any]:
    async with AsyncConnectionPool(
        database_url(settings, "api"), min_size=1, max_size=2, open=False
    ) as pool:
        async with pool.connection() as conn:
            found = await conn.execute(Q["payment_merchant"], {"id": payment_id})
            row = await found.fetchone()
        if row is None:
            raise NotFoundError(f"no payment {payment_id}")
        merchant_id = str(row[0])

        async def work(conn: AsyncConnection[Any]) -> Answer:
            return await request_refund(
                conn, merchant_id, payment_id, body, f"operator-{uuid.uuid4()}"
            )

        path = f"/v1/payments/{payment_id}/refunds"
        fingerprint = request_hash("POST", path, body.model_dump(mode="json"))
        try:
            answer = await run_once(pool, merchant_id, key, fingerprint, work)
        except ApiError as exc:
            raise ApiError(
                exc.status, exc.code, f"{exc.code}: {exc.message}", param=exc.param
            ) from None
    result: dict[str, Any] = json.loads(answer.body)
    return result
