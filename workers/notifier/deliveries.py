"""Deliveries and endpoints as the operator sees them: list, inspect, re-queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

from workers.core.errors import FlowPayError, NotFoundError
from workers.core.sql import load_queries

Q = load_queries("workers.notifier")


class InvalidRequest(FlowPayError):
    """An operator's request that cannot be done as it stands."""


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
    """Send a failed delivery again (same webhook-id), now; its endpoint must be enabled."""
    if conn.execute(Q["delivery_requeue"], {"id": delivery_id}).fetchone() is not None:
        return
    found = conn.execute(Q["delivery_endpoint_of"], {"id": delivery_id}).fetchone()
    if found is None or found[0] != "failed":
        raise NotFoundError(f"no failed delivery {delivery_id}")
    raise InvalidRequest(
        f"endpoint {found[1]} of delivery {delivery_id} is disabled:"
        f" `flowpay webhooks enable {found[1]}` first"
    )


def requeue_failed(
    conn: Connection[Any],
    since: datetime,
    merchant_id: str | None = None,
    endpoint_id: str | None = None,
) -> int:
    """Send again every failed delivery created since ``since`` to an enabled endpoint; how many."""
    params = {"since": since, "merchant_id": merchant_id, "endpoint_id": endpoint_id}
    return len(conn.execute(Q["deliveries_requeue_failed"], params).fetchall())
