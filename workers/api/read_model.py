"""The API's own view of each payment, kept from the payment event log (consumer group ``api``).

It runs as a thread inside ``serve-api`` (one per server process, all in the one group), so the
API needs no role of its own. Should the thread die, the server process shuts down rather than
serve statuses that no longer move: uvicorn's parent starts a new server process, and a
single-process serve-api exits 1 for its supervisor to restart.

Each event is applied at most once: its id goes into ``api.processed_events`` in the same
transaction as its effect, and a clash means "already done".
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Final

from psycopg import Connection
from psycopg_pool import ConnectionPool

from workers.core.config import Settings
from workers.core.db import make_pool
from workers.core.events import (
    Event,
    EventType,
    Failed,
    Refunded,
    RefundFailed,
)
from workers.core.kafka import Message
from workers.core.projection import STATUS_ADVANCES
from workers.core.runner import ConsumerRunner
from workers.core.sql import load_queries
from workers.core.topics import GROUP_API

Q = load_queries("workers.api")
log = logging.getLogger(__name__)
# Set when this process's read model died: serve-api's exit status says so.
died: Final = threading.Event()


class ReadModel:
    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def handle(self, event: Event, message: Message) -> None:
        self.handle_batch([(event, message)])

    def handle_batch(self, batch: list[tuple[Event, Message]]) -> None:
        """A poll batch in one transaction: a commit per batch rather than one per event."""
        # The intake stored each payment in the transaction that emitted its initiated event:
        # there is nothing to apply, and a transaction per accepted payment would halve intake.
        events = [event for event, _message in batch if event.type is not EventType.INITIATED]
        if not events:
            return
        with self.pool.connection() as conn, conn.transaction():
            for event in events:
                if conn.execute(Q["event_mark_processed"], {"event_id": event.event_id}).rowcount:
                    apply(conn, event)


def apply(conn: Connection[Any], event: Event) -> None:
    at = event.occurred_at
    if event.type in STATUS_ADVANCES:
        status, from_statuses = STATUS_ADVANCES[event.type]
        reason = event.payload(Failed).reason if event.type is EventType.FAILED else None
        conn.execute(
            Q["status_advance"],
            {"payment_id": event.payment_id, "status": status, "failure_reason": reason,
             "from_statuses": list(from_statuses), "at": at},
        )  # fmt: skip
    elif event.type is EventType.REFUNDED:
        refunded = event.payload(Refunded)
        conn.execute(
            Q["payment_refunded"],
            {"payment_id": event.payment_id, "refunded_total": refunded.refunded_total, "at": at},
        )
        _resolve_refund(conn, refunded.refund_id, "succeeded", None, event)
    elif event.type is EventType.REFUND_FAILED:
        failed = event.payload(RefundFailed)
        _resolve_refund(conn, failed.refund_id, "failed", failed.reason, event)


def _resolve_refund(
    conn: Connection[Any], refund_id: str, status: str, reason: str | None, event: Event
) -> None:
    conn.execute(
        Q["refund_resolve"],
        {
            "refund_id": refund_id,
            "status": status,
            "failure_reason": reason,
            "at": event.occurred_at,
        },
    )


def start(
    settings: Settings,
    stop: threading.Event,
    on_death: Callable[[], None] | None = None,
) -> threading.Thread:
    """Run the read model in a background thread until ``stop`` is set.

    ``on_death`` runs if the thread ends any other way; by default it stops this process.
    """
    pool = make_pool(settings, name="api-read-model")
    model = ReadModel(pool)
    runner = ConsumerRunner(
        settings,
        group=GROUP_API,
        role="api",
        handler=model.handle,
        batch_handler=model.handle_batch,
    )

    def run() -> None:
        try:
            runner.run(stop)
        except BaseException:
            if stop.is_set():
                raise  # the server is stopping anyway
            log.critical("the read model stopped; this server process stops too", exc_info=True)
            died.set()
            (on_death or _stop_this_process)()
        finally:
            pool.close()

    thread = threading.Thread(target=run, name="api-read-model", daemon=True)
    thread.start()
    return thread


def _stop_this_process() -> None:
    # uvicorn shuts down gracefully on SIGTERM: requests in flight are answered first.
    os.kill(os.getpid(), signal.SIGTERM)
