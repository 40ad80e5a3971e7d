"""The simulator's durable record: charges and refunds in one SQLite file (WAL mode).

Writes run on one thread that owns one connection (``writer.Writer``), so in this process they
never contend; they run inside ``BEGIN IMMEDIATE`` transactions (the database's write lock is
taken before an idempotency key is read), so even two simulators on one file could not create
two charges for one key nor refund past a charge. Reads run on a few other threads, each with
its own connection: WAL lets them read while the writer writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from workers.core.ids import new_id
from workers.gateway_sim.db import Q, connect
from workers.gateway_sim.errors import SimError, not_found
from workers.gateway_sim.schemas import ChargeCreate, RefundCreate
from workers.gateway_sim.writer import Writer

T = TypeVar("T")
JsonObject = dict[str, Any]

# Stripe's test payment methods; any other method is a card that works.
DECLINES: Final = {
    "pm_card_chargeDeclined": "card_declined",
    "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
}


@dataclass(frozen=True)
class Created:
    """A charge or refund, and whether an earlier request with the same key made it."""

    object: JsonObject
    replayed: bool


def charge_object(row: Mapping[str, Any]) -> JsonObject:
    return {
        "id": row["id"],
        "object": "charge",
        "status": row["status"],
        "decline_code": row["decline_code"],
        "amount": row["amount"],
        "currency": row["currency"],
        "payment_method": row["payment_method"],
        "reference": row["reference"],
        "amount_refunded": row["amount_refunded"],
        "created_at": row["created_at"],
    }


def refund_object(row: Mapping[str, Any]) -> JsonObject:
    return {
        "id": row["id"],
        "object": "refund",
        "charge": row["charge_id"],
        "amount": row["amount"],
        "status": row["status"],
        "reference": row["reference"],
        "created_at": row["created_at"],
    }


def charge_record(row: Mapping[str, Any]) -> JsonObject:
    """A charge as ``/_sim/charges`` shows it: with the key that made it."""
    fields = ("id", "reference", "idempotency_key", "amount", "currency", "status")
    return {name: row[name] for name in fields} | {
        "created_at": row["created_at"],
        "amount_refunded": row["amount_refunded"],
    }


class Store:
    def __init__(self, path: Path, readers: int = 2) -> None:
        self.path = path
        self._writer = Writer(path)
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="gateway-sim-reader")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def open(self) -> None:
        """Create the file and its tables if they are not there yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        try:
            conn.executescript(Q["schema"])
            _bring_up_to_date(conn)
        finally:
            conn.close()
        self._writer.start()

    def close(self) -> None:
        self._writer.stop()
        self._readers.shutdown(wait=True)
        # Every thread that used a connection has ended, so closing them here is safe.
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    async def create_charge(self, key: str, body: ChargeCreate, request_hash: str) -> Created:
        return await self._writer.submit(lambda c: _create_charge(c, key, body, request_hash))

    async def create_refund(self, key: str, body: RefundCreate, request_hash: str) -> Created:
        return await self._writer.submit(lambda c: _create_refund(c, key, body, request_hash))

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on the writer's thread, in its transaction (a write of another module)."""
        return await self._writer.submit(work)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._read(work)

    async def charge(self, charge_id: str) -> JsonObject | None:
        row = await self._read(lambda c: c.execute(Q["charge_by_id"], (charge_id,)).fetchone())
        return None if row is None else charge_object(row)

    async def charges_for(self, reference: str) -> list[JsonObject]:
        rows = await self._read(
            lambda c: c.execute(Q["charges_by_reference"], (reference,)).fetchall()
        )
        return [charge_object(row) for row in rows]

    async def refunds_for(self, reference: str) -> list[JsonObject]:
        rows = await self._read(
            lambda c: c.execute(Q["refunds_by_reference"], (reference,)).fetchall()
        )
        return [refund_object(row) for row in rows]

    async def all_charges(self) -> list[JsonObject]:
        rows = await self._read(lambda c: c.execute(Q["all_charges"]).fetchall())
        return [charge_record(row) for row in rows]

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: work(self._connection()))

    def _connection(self) -> sqlite3.Connection:
        """This thread's own connection (opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn


def _bring_up_to_date(conn: sqlite3.Connection) -> None:
    """Add what a file made by an earlier version lacks."""
    columns = {row["name"] for row in conn.execute(Q["refund_columns"])}
    if "reference" not in columns:
        conn.execute(Q["refund_add_reference"])
    conn.execute(Q["refunds_by_reference_index"])


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def same_request(row: Mapping[str, Any], request_hash: str) -> None:
    if row["request_hash"] != request_hash:
        raise SimError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used with different parameters",
        )


# The two writes below run on the writer's thread, inside its transaction.


def _create_charge(
    conn: sqlite3.Connection, key: str, body: ChargeCreate, request_hash: str
) -> Created:
    existing = conn.execute(Q["charge_by_key"], (key,)).fetchone()
    if existing is not None:
        same_request(existing, request_hash)
        return Created(charge_object(existing), replayed=True)
    charge = card_request(body, "ch", key, request_hash, "succeeded") | {"amount_refunded": 0}
    conn.execute(Q["charge_insert"], charge)
    return Created(charge_object(charge), replayed=False)


def card_request(
    body: ChargeCreate, prefix: str, key: str, request_hash: str, status: str
) -> JsonObject:
    """A new charge or authorization of ``body``: ``status``, or declined for a test card that
    declines."""
    decline_code = DECLINES.get(body.payment_method)
    return body.model_dump() | {
        "id": new_id(prefix),
        "idempotency_key": key,
        "request_hash": request_hash,
        "status": status if decline_code is None else "declined",
        "decline_code": decline_code,
        "created_at": now(),
    }


def _create_refund(
    conn: sqlite3.Connection, key: str, body: RefundCreate, request_hash: str
) -> Created:
    existing = conn.execute(Q["refund_by_key"], (key,)).fetchone()
    if existing is not None:
        same_request(existing, request_hash)
        return Created(refund_object(existing), replayed=True)
    charge = conn.execute(Q["charge_by_id"], (body.charge,)).fetchone()
    if charge is None:
        raise not_found("charge")
    if charge["status"] != "succeeded":
        raise SimError(422, "charge_not_refundable", "A declined charge cannot be refunded")
    remaining = int(charge["amount"]) - int(charge["amount_refunded"])
    if body.amount > remaining:
        raise SimError(
            422, "amount_too_large", f"At most {remaining} of this charge can be refunded"
        )
    refund = {
        "id": new_id("re"),
        "idempotency_key": key,
        "request_hash": request_hash,
        "charge_id": body.charge,
        "amount": body.amount,
        "status": "succeeded",
        "created_at": now(),
        "reference": body.reference,
    }
    conn.execute(Q["refund_insert"], refund)
    conn.execute(Q["charge_add_refunded"], {"id": body.charge, "amount": body.amount})
    return Created(refund_object(refund), replayed=False)
