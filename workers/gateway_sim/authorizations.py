"""Authorizations: hold an amount on the card, then capture (all or part) or void it.

As Stripe's manual capture: an authorization of a test card that declines is ``declined``;
else it holds its amount at ``requires_capture`` until a capture (``captured``: a charge of
the amount captured is made, which refunds then refund, and the rest is released) or a void
(``canceled``). Each request is done once per idempotency key (a namespace per endpoint) and
a key reused with other parameters is refused, as charges are. These run on the store's
writer thread, inside its ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from workers.core.ids import new_id
from workers.gateway_sim.db import Q
from workers.gateway_sim.errors import SimError, not_found
from workers.gateway_sim.schemas import AuthorizationCreate, CaptureCreate
from workers.gateway_sim.store import Created, JsonObject, card_request, now, same_request


def authorization_object(row: Mapping[str, Any]) -> JsonObject:
    holding = row["status"] == "requires_capture"
    return {
        "id": row["id"],
        "object": "authorization",
        "status": row["status"],
        "decline_code": row["decline_code"],
        "amount": row["amount"],
        "amount_capturable": row["amount"] if holding else 0,
        "amount_captured": row["amount_captured"],
        "currency": row["currency"],
        "payment_method": row["payment_method"],
        "reference": row["reference"],
        "charge": row["charge_id"],
        "created_at": row["created_at"],
    }


def create(
    conn: sqlite3.Connection, key: str, body: AuthorizationCreate, request_hash: str
) -> Created:
    existing = conn.execute(Q["authorization_by_key"], (key,)).fetchone()
    if existing is not None:
        same_request(existing, request_hash)
        return Created(authorization_object(existing), replayed=True)
    row = card_request(body, "auth", key, request_hash, "requires_capture")
    row |= {"amount_captured": 0, "charge_id": None}
    conn.execute(Q["authorization_insert"], row)
    return Created(authorization_object(row), replayed=False)


def capture(
    conn: sqlite3.Connection,
    authorization_id: str,
    key: str,
    body: CaptureCreate,
    request_hash: str,
) -> Created:
    """Capture ``amount_to_capture`` (default: all of it) as a charge; release the rest."""
    replayed = _replayed(conn, "capture", key, request_hash)
    if replayed is not None:
        return replayed
    row = _holding(conn, authorization_id, "captured")
    amount = body.amount_to_capture or int(row["amount"])
    if amount > int(row["amount"]):
        raise SimError(422, "amount_too_large", f"At most {row['amount']} can be captured")
    charge = {
        "id": new_id("ch"),
        "idempotency_key": f"capture:{key}",
        "request_hash": request_hash,
        "amount": amount,
        "currency": row["currency"],
        "payment_method": row["payment_method"],
        "reference": row["reference"],
        "status": "succeeded",
        "decline_code": None,
        "created_at": now(),
    }
    conn.execute(Q["charge_insert"], charge)
    settled = {"id": authorization_id, "status": "captured", "amount_captured": amount,
               "charge_id": charge["id"]}  # fmt: skip
    return _settle(conn, "capture", key, request_hash, row, settled)


def void(conn: sqlite3.Connection, authorization_id: str, key: str, request_hash: str) -> Created:
    """Release the whole hold."""
    replayed = _replayed(conn, "void", key, request_hash)
    if replayed is not None:
        return replayed
    row = _holding(conn, authorization_id, "voided")
    settled = {"id": authorization_id, "status": "canceled", "amount_captured": 0,
               "charge_id": None}  # fmt: skip
    return _settle(conn, "void", key, request_hash, row, settled)


def _replayed(conn: sqlite3.Connection, kind: str, key: str, request_hash: str) -> Created | None:
    existing = conn.execute(Q["action_by_key"], (kind, key)).fetchone()
    if existing is None:
        return None
    same_request(existing, request_hash)
    return Created(json.loads(existing["answer"]), replayed=True)


def _holding(conn: sqlite3.Connection, authorization_id: str, doing: str) -> Mapping[str, Any]:
    row = conn.execute(Q["authorization_by_id"], (authorization_id,)).fetchone()
    if row is None:
        raise not_found("authorization")
    if row["status"] != "requires_capture":
        raise SimError(
            422,
            "authorization_not_holding",
            f"This authorization is {row['status']}: it cannot be {doing}",
        )
    return dict(row)


def _settle(
    conn: sqlite3.Connection,
    kind: str,
    key: str,
    request_hash: str,
    row: Mapping[str, Any],
    settled: dict[str, Any],
) -> Created:
    conn.execute(Q["authorization_settle"], settled)
    answer = authorization_object({**row, **settled})
    conn.execute(
        Q["action_insert"],
        {"kind": kind, "idempotency_key": key, "request_hash": request_hash,
         "authorization_id": row["id"], "answer": json.dumps(answer), "created_at": now()},
    )  # fmt: skip
    return Created(answer, replayed=False)
