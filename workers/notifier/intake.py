"""The notifier's consumer: keep a view of each payment, record one delivery per endpoint.

The Kafka consumer never waits on a merchant's server: it only writes deliveries, and the sender
(``workers.notifier.sender``) delivers them. Everything for one event commits together with its
id in ``notifier.processed_events``, so a redelivered event records nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from psycopg import Connection
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from workers.core import tracing
from workers.core.delivery import headers_of
from workers.core.endpoint_events import WEBHOOK_EVENT_TYPES, wants
from workers.core.events import Event, EventType, header
from workers.core.ids import new_id
from workers.core.kafka import Message
from workers.core.projection import advance, initial, iso
from workers.core.sql import load_queries
from workers.notifier.endpoints import ENDPOINT_DISABLED

Q = load_queries("workers.notifier")

NOTIFIED: Final = frozenset(WEBHOOK_EVENT_TYPES)


class Intake:
    def __init__(
        self, pool: ConnectionPool[Any], on_recorded: Callable[[], None] = lambda: None
    ) -> None:
        self.pool = pool
        self.on_recorded = on_recorded  # after the commit: the deliveries are there to claim

    def handle(self, event: Event, message: Message) -> None:
        self.handle_batch([(event, message)])

    def handle_batch(self, batch: list[tuple[Event, Message]]) -> None:
        """A poll batch in one transaction: a commit per batch rather than one per event."""
        recorded = 0
        with self.pool.connection() as conn, conn.transaction():
            for event, message in batch:
                if conn.execute(Q["event_mark_processed"], {"event_id": event.event_id}).rowcount:
                    payment = _project(conn, event)
                    if payment is not None and event.type in NOTIFIED:
                        recorded += _record_deliveries(conn, event, payment, message)
        if recorded:
            self.on_recorded()


def _project(conn: Connection[Any], event: Event) -> dict[str, Any] | None:
    row = conn.execute(Q["payment_get"], {"payment_id": event.payment_id}).fetchone()
    if event.type is EventType.INITIATED:
        payment = initial(event)
    elif row is None:
        return None  # a payment whose start this notifier never saw: nothing to describe
    else:
        payment = advance(row[0], event)
    conn.execute(
        Q["payment_put"],
        {
            "payment_id": event.payment_id,
            "merchant_id": event.merchant_id,
            "object": Jsonb(payment),
        },
    )
    return payment


def webhook_body(event: Event, payment: dict[str, Any]) -> bytes:
    body = {"type": event.type.value, "timestamp": iso(event.occurred_at), "data": payment}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _record_deliveries(
    conn: Connection[Any], event: Event, payment: dict[str, Any], message: Message
) -> int:
    body, recorded = webhook_body(event, payment), 0
    # The event's own trace context, not the current span's: a batch taken at once runs under
    # no span of its own, and the attempts must stay in the payment's trace either way.
    traceparent = header(headers_of(message), tracing.TRACEPARENT)
    endpoints = conn.execute(
        Q["endpoints_of_merchant"], {"merchant_id": event.merchant_id}
    ).fetchall()
    for endpoint_id, endpoint_status, enabled_events in endpoints:
        if not wants(enabled_events, event.type.value):
            continue
        # A disabled endpoint's deliveries are kept, not sent: `webhooks retry` sends them once
        # it is enabled again.
        enabled = endpoint_status == "enabled"
        conn.execute(
            Q["delivery_insert"],
            {
                "id": new_id("msg"),
                "endpoint_id": endpoint_id,
                "event_id": event.event_id,
                "merchant_id": event.merchant_id,
                "payment_id": event.payment_id,
                "event_type": event.type.value,
                "body": body,
                "correlation_id": event.correlation_id,
                "traceparent": traceparent,
                "status": "pending" if enabled else "failed",
                "last_error": None if enabled else ENDPOINT_DISABLED,
            },
        )
        recorded += int(enabled)
    return recorded
