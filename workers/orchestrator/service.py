"""`flowpay run-orchestrator`: drive every saga from the payment event log and its timers.

Events arrive on the consumer engine (group ``orchestrator``, offsets in Kafka committed after
the effects). A poll batch is one transaction: the events not heard before, the instances they
concern (locked), the machine's decisions, then one statement per table: sagas, steps, timers,
the commands staged in ``orchestrator.outbox`` (published by the relay to the command topic)
and the events heard. A redelivered event is found heard and changes nothing.

Timers live in ``orchestrator.timers``: a loop claims due ones (``FOR UPDATE SKIP LOCKED``,
so that several orchestrators never fire one twice) and fires them in the same manner; they
survive restarts because they are rows.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any, Final

from psycopg_pool import ConnectionPool

from workers.core import heap, observe, tracing
from workers.core.config import Settings
from workers.core.consuming import IGNORE, Batch, Routes, Subscriber, register, run
from workers.core.delivery import headers_of
from workers.core.events import Event, EventType, header
from workers.core.lifecycle import install_stop_handlers
from workers.core.metrics import serve_metrics
from workers.core.topics import GROUP_ORCHESTRATOR
from workers.orchestrator import db, machine, store
from workers.orchestrator.machine import Timeouts

log = logging.getLogger(__name__)
ROLE: Final = db.ROLE


def serve(settings: Settings) -> None:
    """Run the orchestrator in this process until SIGTERM/SIGINT."""
    observe.start(settings, ROLE)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    serve_metrics(settings, settings.metrics.orchestrator_port)
    orchestrator = Orchestrator(settings, db.pool(settings))
    try:
        timers = threading.Thread(target=orchestrator.run_timers, args=(stop,), name="timers")
        heap.settle()
        timers.start()
        run(settings, subscriber(orchestrator), stop)
        stop.set()
        timers.join()
    finally:
        orchestrator.pool.close()


class Orchestrator:
    def __init__(self, settings: Settings, pool: ConnectionPool[Any]) -> None:
        self.config = settings.orchestrator
        self.pool = pool
        self.timeouts = Timeouts(
            command_timeout=self.config.command_timeout_s,
            authorization_ttl=self.config.authorization_ttl_s,
        )

    def hear(self, batch: Batch) -> None:
        """A poll batch's events through their sagas, in one transaction."""
        unique = {e.event_id: e for e in batch.events}
        now = datetime.now(UTC)
        with self.pool.connection() as conn, conn.transaction():
            heard_before = store.seen(conn, list(unique))
            events = [e for i, e in unique.items() if i not in heard_before]
            if not events:
                return
            instances = store.lock(conn, (e.payment_id for e in events))
            decisions, heard = machine.walk(events, instances, now, self.timeouts)
            store.write(conn, decisions, heard, now, _traces(batch))

    def fire_due(self, now: datetime | None = None) -> int:
        """Fire the due timers (one batch of them, in one transaction); how many fired."""
        now = now or datetime.now(UTC)
        with self.pool.connection() as conn, conn.transaction():
            claimed = store.claim_due(conn, now, self.config.timer_batch_size)
            if not claimed:
                return 0
            store.mark_fired(conn, [timer_id for timer_id, *_ in claimed], now)
            decisions = [
                machine.fire(instance, seq, action, now, self.timeouts)
                for _id, seq, action, instance in claimed
            ]
            store.write(conn, [d for d in decisions if d.changed], [], now)
        return len(claimed)

    def run_timers(self, stop: threading.Event) -> None:
        """Fire due timers until ``stop``; a failed tick (the database away) is tried again."""
        while not stop.is_set():
            try:
                fired = self.fire_due()
            except Exception:
                log.exception("firing due timers failed; trying again")
                fired = 0
            if not fired:
                stop.wait(self.config.timer_interval_s)


def _traces(batch: Batch) -> dict[str, str]:
    """Per payment, the trace context of its last event in the batch: the commands it leads to
    stay in the payment's trace."""
    traces = {}
    for item in batch.items:
        traceparent = header(headers_of(item.message), tracing.TRACEPARENT)
        if traceparent is not None and isinstance(item.decoded, Event):
            traces[item.decoded.payment_id] = traceparent
    return traces


def subscriber(orchestrator: Orchestrator) -> Subscriber[Orchestrator]:
    return Subscriber(GROUP_ORCHESTRATOR, ROLE, ROUTES, orchestrator, principal="orchestrator")


ROUTES: Final = register(
    Routes[Orchestrator](
        ROLE,
        {
            # Events that start a saga.
            EventType.INITIATED: Orchestrator.hear,
            EventType.AUTHORIZATION_REQUESTED: Orchestrator.hear,
            EventType.REFUND_REQUESTED: Orchestrator.hear,
            # A merchant's decision, which a waiting step waits for.
            EventType.CAPTURE_REQUESTED: Orchestrator.hear,
            EventType.CANCEL_REQUESTED: Orchestrator.hear,
            # Answers to commands.
            EventType.REQUIRES_CAPTURE: Orchestrator.hear,
            EventType.SUCCEEDED: Orchestrator.hear,
            EventType.FAILED: Orchestrator.hear,
            EventType.CANCELED: Orchestrator.hear,
            EventType.REFUNDED: Orchestrator.hear,
            EventType.REFUND_FAILED: Orchestrator.hear,
            EventType.PAYOUT_REQUESTED: Orchestrator.hear,
            EventType.PAYOUT_PAID: Orchestrator.hear,
            EventType.PAYOUT_FAILED: Orchestrator.hear,
            # Progress inside the executor, and its own compensation of a late charge.
            EventType.PROCESSING: IGNORE,
            EventType.CHARGE_REVERSED: IGNORE,
            # The charge waits for the customer: its outcome is the step's answer.
            EventType.REQUIRES_ACTION: IGNORE,
            # A gateway's webhook: the executing service settles by it and answers as usual.
            EventType.GATEWAY_REPORTED: IGNORE,
        },
    )
)
