"""What the operator's CLI does through the API service's own code paths (no HTTP)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from workers.api import decisions, payouts, webhook_endpoints
from workers.api.endpoint_schemas import WebhookEndpointCreate
from workers.api.errors import ApiError
from workers.api.idempotency import Answer, request_hash, run_once
from workers.api.payments import payment_object, request_refund
from workers.api.schemas import CancelCreate, CaptureCreate, PayoutCreate, RefundCreate
from workers.core.config import Settings
from workers.core.db import database_url
from workers.core.errors import FlowPayError, NotFoundError
from workers.core.requests import StrictBody
from workers.core.sealing import keyring
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

    async def act(conn: AsyncConnection[Any], merchant_id: str, correlation_id: str) -> Answer:
        return await request_refund(conn, merchant_id, payment_id, body, correlation_id)

    return asyncio.run(_as_merchant(settings, payment_id, "refunds", body, key, act))


def capture_as_operator(
    settings: Settings, payment_id: str, amount: int | None, key: str | None
) -> dict[str, Any]:
    """Capture a payment exactly as POST /v1/payments/<id>/capture does, for its merchant."""
    body = CaptureCreate(amount_to_capture=amount)

    async def act(conn: AsyncConnection[Any], merchant_id: str, correlation_id: str) -> Answer:
        return await decisions.capture(conn, merchant_id, payment_id, body, correlation_id)

    return asyncio.run(_as_merchant(settings, payment_id, "capture", body, key, act))


def cancel_as_operator(
    settings: Settings, payment_id: str, reason: str | None, key: str | None
) -> dict[str, Any]:
    """Cancel a payment exactly as POST /v1/payments/<id>/cancel does, for its merchant."""
    body = CancelCreate.model_validate({"cancellation_reason": reason})

    async def act(conn: AsyncConnection[Any], merchant_id: str, correlation_id: str) -> Answer:
        return await decisions.cancel(conn, merchant_id, payment_id, body, correlation_id)

    return asyncio.run(_as_merchant(settings, payment_id, "cancel", body, key, act))


def add_endpoint_as_operator(settings: Settings, merchant_id: str, url: str) -> dict[str, Any]:
    """Add a merchant's webhook endpoint exactly as POST /v1/webhook_endpoints does: the API's
    record of it (so the merchant's ``GET /v1/webhook_endpoints`` lists it) and its event to
    the notifier, in one transaction. The answer shows its secret, this once."""
    keys = keyring(settings)  # refused at once without one: nothing is made

    async def add() -> dict[str, Any]:
        checked = await webhook_endpoints.checked_url(url, settings.notifier)
        try:
            body = WebhookEndpointCreate(url=checked)
        except ValidationError:
            raise FlowPayError("url: not an http(s) URL of at most 2000 characters") from None
        conninfo = database_url(settings, "api")
        async with await AsyncConnection.connect(conninfo) as conn, conn.transaction():
            found = await conn.execute(Q["merchant_exists"], {"id": merchant_id})
            if await found.fetchone() is None:
                raise NotFoundError(f"no merchant {merchant_id}")
            answer = await webhook_endpoints.create(
                conn, keys, merchant_id, body, checked, f"operator-{uuid.uuid4()}",
                most=settings.api.max_webhook_endpoints,
            )  # fmt: skip
        shown: dict[str, Any] = json.loads(answer.body)
        return shown

    return asyncio.run(add())


OperatorAct = Callable[[AsyncConnection[Any], str, str], Awaitable[Answer]]


async def _as_merchant(
    settings: Settings,
    payment_id: str,
    action: str,
    body: StrictBody,
    key: str | None,
    act: OperatorAct,
) -> dict[str, Any]:
    """``act`` once per key for the payment's merchant, as the route ``action`` would."""
    async with AsyncConnectionPool(
        database_url(settings, "api"), min_size=1, max_size=2, open=False
    ) as pool:
        async with pool.connection() as conn:
            found = await conn.execute(Q["payment_merchant"], {"id": payment_id})
            row = await found.fetchone()
        if row is None:
            raise NotFoundError(f"no payment {payment_id}")
        path = f"/v1/payments/{payment_id}/{action}"
        return await _once(pool, str(row[0]), path, body, key, act)


async def _once(
    pool: AsyncConnectionPool[Any],
    merchant_id: str,
    path: str,
    body: StrictBody,
    key: str | None,
    act: OperatorAct,
) -> dict[str, Any]:
    """``act`` once per key for ``merchant_id``, as the route at ``path`` would."""

    async def work(conn: AsyncConnection[Any]) -> Answer:
        return await act(conn, merchant_id, f"operator-{uuid.uuid4()}")

    fingerprint = request_hash("POST", path, body.model_dump(mode="json"))
    try:
        answer = await run_once(pool, merchant_id, key or str(uuid.uuid4()), fingerprint, work)
    except ApiError as exc:
        raise ApiError(
            exc.status, exc.code, f"{exc.code}: {exc.message}", param=exc.param
        ) from None
    result: dict[str, Any] = json.loads(answer.body)
    return result


def payout_as_operator(
    settings: Settings, merchant_id: str, body: PayoutCreate, key: str | None
) -> dict[str, Any]:
    """Pay out as POST /v1/payouts does for the merchant (reserving from its balance)."""

    async def act(conn: AsyncConnection[Any], merchant: str, correlation_id: str) -> Answer:
        return await payouts.create_payout(conn, merchant, body, correlation_id)

    async def run() -> dict[str, Any]:
        async with _merchant_pool(settings, merchant_id) as pool:
            return await _once(pool, merchant_id, "/v1/payouts", body, key, act)

    return asyncio.run(run())


def balance_as_operator(settings: Settings, merchant_id: str) -> dict[str, Any]:
    """The merchant's balance, as GET /v1/balance shows it."""

    async def run() -> dict[str, Any]:
        async with _merchant_pool(settings, merchant_id) as pool:
            return await payouts.balance(pool, merchant_id)

    return asyncio.run(run())


@asynccontextmanager
async def _merchant_pool(
    settings: Settings, merchant_id: str
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A small pool as the API's role; NotFoundError for a merchant FlowPay does not know."""
    async with AsyncConnectionPool(
        database_url(settings, "api"), min_size=1, max_size=2, open=False
    ) as pool:
        async with pool.connection() as conn:
            found = await conn.execute(Q["merchant_exists"], {"id": merchant_id})
            if await found.fetchone() is None:
                raise NotFoundError(f"no merchant {merchant_id}")
        yield pool
