"""Payouts and the balance: a merchant pays out what it may, never more.

Which service says "insufficient" at once (the ``422``)? The API, the one the request reaches:
services talk only through Kafka, so it cannot read the ledger's schema, and asking the ledger
would be a round trip through the log. It keeps a projection of each merchant's balance
(``api.balances``), credited by its payments' captures and debited by their refunds as the read
model hears them, and reserves a payout's amount from it in the transaction that records the
payout and stages ``payout.requested``: one ``UPDATE ... WHERE available >= amount`` under the
row's lock, so concurrent payouts are serialised and each sees the others' reservations; none
can overdraw. The ledger stays the truth: it books the reservation pending from that event,
posts it on ``payout.paid`` or voids it on ``payout.failed``, when the read model also gives the
amount back to ``available``.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from workers.api.errors import ApiError, not_found
from workers.api.idempotency import Answer
from workers.api.payments import SOURCE, check_lookable, dumps
from workers.api.schemas import PayoutCreate
from workers.core import correlation
from workers.core.events import EventType, PayoutRequested, new_event
from workers.core.ids import new_id
from workers.core.outbox import stage_async
from workers.core.projection import iso
from workers.core.sql import load_queries

Q = load_queries("workers.api")
log = logging.getLogger(__name__)


def payout_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "payout",
        "amount": row["amount"],
        "currency": row["currency"],
        "destination": row["destination"],
        "status": row["status"],
        "failure_reason": row["failure_reason"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


async def create_payout(
    conn: AsyncConnection[Any], merchant_id: str, body: PayoutCreate, correlation_id: str
) -> Answer:
    """Reserve the amount from the merchant's available balance and record the payout with its
    ``payout.requested`` event, in the caller's transaction; 422 when the balance is short."""
    ids = {"merchant_id": merchant_id, "currency": body.currency}
    reserved = await conn.execute(Q["balance_reserve"], {**ids, "amount": body.amount})
    if await reserved.fetchone() is None:
        found = await (await conn.execute(Q["balance_available"], ids)).fetchone()
        available = int(found[0]) if found else 0
        raise ApiError(
            422,
            "insufficient_balance",
            f"amount: {available} {body.currency} is available to pay out",
            param="amount",
        )
    payout_id = new_id("po")
    event = new_event(
        EventType.PAYOUT_REQUESTED,
        payment_id=payout_id,
        merchant_id=merchant_id,
        data=PayoutRequested(
            amount=body.amount, currency=body.currency, destination=body.destination
        ),
        source=SOURCE,
        correlation_id=correlation_id,
    )
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            Q["payout_insert"],
            {**ids, "id": payout_id, "amount": body.amount, "destination": body.destination,
             "created_at": event.occurred_at},
        )  # fmt: skip
        row = await cursor.fetchone()
        assert row is not None
        await stage_async(cursor, "api", [event])
    log.info("payout requested", extra=correlation.of_event(event))
    return Answer(202, dumps(payout_object(row)), f"/v1/payouts/{payout_id}")


async def get_payout(
    pool: AsyncConnectionPool[Any], merchant_id: str, payout_id: str
) -> dict[str, Any]:
    check_lookable(payout_id)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(Q["payout_get"], {"id": payout_id, "merchant_id": merchant_id})
        row = await cursor.fetchone()
    if row is None:
        raise not_found("payout")
    return payout_object(row)


async def list_payouts(
    pool: AsyncConnectionPool[Any], merchant_id: str, *, limit: int, starting_after: str | None
) -> dict[str, Any]:
    """A page of the merchant's payouts, newest first, as payments are listed."""
    params = {"merchant_id": merchant_id, "limit": limit + 1, "starting_after": starting_after}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
        if starting_after is not None:
            check_lookable(starting_after, param="starting_after")
            await cursor.execute(Q["payout_exists"], {"id": starting_after, **params})
            if await cursor.fetchone() is None:
                raise not_found("payout", param="starting_after")
        await cursor.execute(
            Q["payouts_list" if starting_after is None else "payouts_list_after"], params
        )
        rows = await cursor.fetchall()
    data = [payout_object(r) for r in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit}


async def balance(pool: AsyncConnectionPool[Any], merchant_id: str) -> dict[str, Any]:
    """``available`` (may be paid out) and ``pending`` (payments still in flight) per currency."""
    async with pool.connection() as conn:
        cursor = await conn.execute(Q["balance_of"], {"merchant_id": merchant_id})
        rows = await cursor.fetchall()
    return {
        "object": "balance",
        "available": [{"amount": int(a), "currency": c} for c, a, _p in rows],
        "pending": [{"amount": int(p), "currency": c} for c, _a, p in rows],
    }
