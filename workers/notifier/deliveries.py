"""Deliveries and endpoints as the operator sees them: list, inspect, re-queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

from workers.core.errors import NotFoundError
from workers.core.sql import load_queries

Q = load_queries("workers.notifier")


def list_endpoints(conn: Connection[Any], merchant_id: str | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(Q["endpoints_list"], {"merchant_id": merchant_id}).fetchall()


def list_deliveries(
    conn: Connection[Any],
    *,
    status: str | None = None,
    merchant_id: str | None = None,
    payment_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    params = {
        "status": status,
        "merchant_id": merchant_id,
        "payment_id": payment_id,
        "limit": limit,
    }
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(Q["deliveries_list"], params).fetchall()


def attempts_of(conn: Connection[Any], delivery_id: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(Q["attempts_of"], {"delivery_id": delivery_id}).fetchall()


def requeue(conn: Connection[Any], delivery_id: str) -> None:
    """Send a failed delivery again (same webhook-id), now."""
    if conn.execute(Q["delivery_requeue"], {"id": delivery_id}).fetchone() is None:
        raise NotFoundError(f"no failed delivery {delivery_id}")


def requeue_failed(conn: Connection[Any], since: datetime, merchant_id: str | None = None) -> int:
    """Send again every delivery that failed and was created since ``since``; how many."""
    return len(
        conn.execute(
            Q["deliveries_requeue_failed"], {"since": since, "merchant_id": merchant_id}
        ).fetchall()
    )
