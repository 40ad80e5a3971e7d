"""Read-only views of the processor's record, for the operator's `flowpay status`."""

from __future__ import annotations

from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

from workers.core.sql import load_queries

Q = load_queries("workers.processor")


def processor_view(conn: Connection[Any], payment_id: str) -> dict[str, Any] | None:
    """The processor's state of a payment, with every gateway attempt; None if it never saw it."""
    with conn.cursor(row_factory=dict_row) as cursor:
        payment = cursor.execute(Q["payment_get"], {"payment_id": payment_id}).fetchone()
        if payment is None:
            return None
        attempts = cursor.execute(Q["attempts_of"], {"payment_id": payment_id}).fetchall()
    return {**payment, "attempts": attempts}
