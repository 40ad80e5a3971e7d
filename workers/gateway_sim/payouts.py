"""Payouts: a merchant's balance paid into its bank account, once per idempotency key.

As Stripe's test mode, a payout to a test bank account that fails ends ``failed`` with its
``failure_code``; any other destination is ``paid`` at once. A key reused with other
parameters is refused, as charges are. Runs on the store's writer thread, inside its
``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, Final

from workers.core.ids import new_id
from workers.gateway_sim.db import Q
from workers.gateway_sim.schemas import PayoutCreate
from workers.gateway_sim.store import Created, JsonObject, now, same_request

# Test bank accounts whose payouts fail, and why (Stripe's failure codes).
FAILING_DESTINATIONS: Final = {
    "ba_closed": "account_closed",
    "ba_no_account": "no_account",
    "ba_insufficient_funds": "insufficient_funds",
}


def payout_object(row: Mapping[str, Any]) -> JsonObject:
    return {
        "id": row["id"],
        "object": "payout",
        "status": row["status"],
        "failure_code": row["failure_code"],
        "amount": row["amount"],
        "currency": row["currency"],
        "destination": row["destination"],
        "reference": row["reference"],
        "created_at": row["created_at"],
    }


def create(conn: sqlite3.Connection, key: str, body: PayoutCreate, request_hash: str) -> Created:
    existing = conn.execute(Q["payout_by_key"], (key,)).fetchone()
    if existing is not None:
        same_request(existing, request_hash)
        return Created(payout_object(existing), replayed=True)
    failure = FAILING_DESTINATIONS.get(body.destination)
    row = body.model_dump() | {
        "id": new_id("po"),
        "idempotency_key": key,
        "request_hash": request_hash,
        "status": "paid" if failure is None else "failed",
        "failure_code": failure,
        "created_at": now(),
    }
    conn.execute(Q["payout_insert"], row)
    return Created(payout_object(row), replayed=False)
