"""The API's own view of each payment, kept from the payment event log (consumer group ``api``).

It runs on the consumer engine in a thread inside ``serve-api`` (one per server process, all in
the one group), so the API needs no role of its own. Should the thread die, the server process
shuts down rather than serve statuses that no longer move: uvicorn's parent starts a new server
process, and a single-process serve-api exits 1 for its supervisor to restart.

A poll batch is applied in one transaction, one statement per round of it (no round holds two
events of one payment). Each event is applied at most once: its id goes into
``api.processed_events`` in the statement that applies it, and a clash means "already done".
Every event of a payment is also recorded in ``api.events`` (by its id, once) with the payment
as it stands after it, for ``GET /v1/events``; those older than ``api.events_retention_days``
are pruned as batches come.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from workers.core.config import Settings
from workers.core.consuming import IGNORE, Batch, Received, Routes, Subscriber, register, run
from workers.core.db import make_pool
from workers.core.events import (
    Canceled,
    CancelRequested,
    EventData,
    EventType,
    Failed,
    PayoutFailed,
    Refunded,
    RefundFailed,
    RequiresCapture,
    Succeeded,
)
from workers.core.projection import RELEASING, STATUS_ADVANCES, next_action_of
from workers.core.sql import load_queries
from workers.core.status import PaymentStatus
from workers.core.threads import name_native
from workers.core.topics import GROUP_API

Q = load_queries("workers.api")
log = logging.getLogger(__name__)
ROLE: Final = "api-read-model"
# Set when this process's read model died: serve-api's exit status says so.
died: Final = threading.Event()

# The status rules, as rows the statement joins: (event type, to, from).
_RULES: Final = {
    "rule_types": [t.value for t, (_to, froms) in STATUS_ADVANCES.items() for _ in froms],
    "rule_to": [to.value for _to_type, (to, froms) in STATUS_ADVANCES.items() for _ in froms],
    "rule_from": [f.value for _t, (_to, froms) in STATUS_ADVANCES.items() for f in froms],
    "releasing": [t.value for t in RELEASING],
    "succeeded": EventType.SUCCEEDED.value,
    "authorized": EventType.REQUIRES_CAPTURE.value,
}


# Events past their retention are deleted at most this often by each server process.
PRUNE_EVERY_S: Final = 600.0


class ReadModel:
    def __init__(self, pool: ConnectionPool[Any], retention_days: int = 30) -> None:
        self.pool = pool
        self.retention_days = retention_days
        self._pruned_at = -PRUNE_EVERY_S

    def apply(self, batch: Batch) -> None:
        """A poll batch in one transaction: a commit per batch rather than one per event."""
        with self.pool.connection() as conn, conn.transaction():
            for round_ in batch.rounds():
                params = changes(round_)
                conn.execute(Q["changes_apply"], params)
                conn.execute(Q["events_record"], params)
                credits = balance_credits(round_)
                if credits["event_ids"]:
                    conn.execute(Q["balance_credit"], credits)
            if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
                conn.execute(Q["events_prune"], {"days": self.retention_days})
                self._pruned_at = time.monotonic()

    def settle_payouts(self, batch: Batch) -> None:
        """Payouts paid or failed: their outcome, and a failed one's amount available again."""
        columns: dict[str, list[Any]] = {"event_ids": [], "payout_ids": [], "statuses": [],
                                         "reasons": []}  # fmt: skip
        for item in batch.items:
            event = item.event
            failed = event.data if isinstance(event.data, PayoutFailed) else None
            row = (event.event_id, event.payment_id, "failed" if failed else "paid",
                   failed.reason if failed else None)  # fmt: skip
            for column, value in zip(columns.values(), row, strict=True):
                column.append(value)
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(Q["payouts_settle"], columns)


def balance_credits(items: Sequence[Received]) -> dict[str, list[Any]]:
    """A round's captures (+, None: the payment's whole amount) and refunds (-), for the
    merchants' balances (``balance_credit``)."""
    columns: dict[str, list[Any]] = {"event_ids": [], "payment_ids": [], "amounts": [],
                                     "signs": []}  # fmt: skip
    for item in items:
        data = item.event.data
        if isinstance(data, Succeeded):
            row = (data.amount_captured, 1)
        elif isinstance(data, Refunded):
            row = (data.amount, -1)
        else:
            continue
        for column, value in zip(columns.values(), (item.event.event_id, item.event.payment_id,
                                                     *row), strict=True):  # fmt: skip
            column.append(value)
    return columns


def changes(items: Sequence[Received]) -> dict[str, Any]:
    """The statement's parameters for one round: a column per field, a row per event."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in ("event_ids", "types", "payment_ids", "reasons", "refunded_totals",
                     "refund_ids", "refund_statuses", "capturables", "captured", "cancellations",
                     "next_actions", "at")
    }  # fmt: skip
    for item in items:
        event = item.event
        row = (event.event_id, event.type.value, event.payment_id, *_details(event.data),
               *_amounts(event.data), _next_action(event.data), event.occurred_at)  # fmt: skip
        for column, value in zip(columns.values(), row, strict=True):
            column.append(value)
    return {**columns, **_RULES, "refunded_status": PaymentStatus.REFUNDED.value}


def _details(data: EventData) -> tuple[str | None, int | None, str | None, str | None]:
    """(reason, refunded total, refund id, the refund's new status) of an event's payload."""
    if isinstance(data, Failed):
        return data.reason, None, None, None
    if isinstance(data, Refunded):
        return None, data.refunded_total, data.refund_id, "succeeded"
    if isinstance(data, RefundFailed):
        return data.reason, None, data.refund_id, "failed"
    return None, None, None, None


def _amounts(data: EventData) -> tuple[int | None, int | None, str | None]:
    """(amount capturable, amount captured, cancellation reason) of an event's payload."""
    if isinstance(data, RequiresCapture):
        return data.amount_capturable, None, None
    if isinstance(data, Succeeded):
        return None, data.amount_captured, None
    if isinstance(data, Canceled | CancelRequested):
        return None, None, data.cancellation_reason.value
    return None, None, None


def _next_action(data: EventData) -> Jsonb | None:
    found = next_action_of(data)
    return None if found is None else Jsonb(found)


ROUTES: Final = register(
    Routes[ReadModel](
        ROLE,
        {
            # The intake stored the payment as it emitted this event: only the event is new
            # (applied per poll batch, as every event).
            EventType.INITIATED: ReadModel.apply,
            # The orchestrator's request to the gateway: no event of the merchant's.
            EventType.AUTHORIZATION_REQUESTED: IGNORE,
            EventType.PROCESSING: ReadModel.apply,
            EventType.REQUIRES_CAPTURE: ReadModel.apply,
            EventType.REQUIRES_ACTION: ReadModel.apply,
            # The API moved the payment as it emitted these; applying them again changes
            # nothing, and keeps the read model's rules the projection's.
            EventType.CAPTURE_REQUESTED: ReadModel.apply,
            EventType.CANCEL_REQUESTED: ReadModel.apply,
            EventType.SUCCEEDED: ReadModel.apply,
            EventType.FAILED: ReadModel.apply,
            EventType.CANCELED: ReadModel.apply,
            # The API stored the refund as it emitted this event: only the event is new.
            EventType.REFUND_REQUESTED: ReadModel.apply,
            EventType.REFUNDED: ReadModel.apply,
            EventType.REFUND_FAILED: ReadModel.apply,
            # The payment already failed; the reversal changes nothing the API shows but
            # its events.
            EventType.CHARGE_REVERSED: ReadModel.apply,
            # The processor settles by it; what the API shows changes with that settlement
            # (a gateway's report is not an event of the merchant's).
            EventType.GATEWAY_REPORTED: IGNORE,
            # The intake stored the payout and reserved its amount as it emitted this event.
            EventType.PAYOUT_REQUESTED: IGNORE,
            EventType.PAYOUT_PAID: ReadModel.settle_payouts,
            EventType.PAYOUT_FAILED: ReadModel.settle_payouts,
        },
    )
)


def subscriber(model: ReadModel) -> Subscriber[ReadModel]:
    return Subscriber(GROUP_API, ROLE, ROUTES, model, principal="api")


def start(
    settings: Settings,
    stop: threading.Event,
    on_death: Callable[[], None] | None = None,
) -> threading.Thread:
    """Run the read model in a background thread until ``stop`` is set.

    ``on_death`` runs if the thread ends any other way; by default it stops this process.
    """
    pool = make_pool(settings, "api", name=ROLE)

    def consume() -> None:
        name_native()
        try:
            run(settings, subscriber(ReadModel(pool, settings.api.events_retention_days)), stop)
        except BaseException:
            if stop.is_set():
                raise  # the server is stopping anyway
            log.critical("the read model stopped; this server process stops too", exc_info=True)
            died.set()
            (on_death or _stop_this_process)()
        finally:
            pool.close()

    thread = threading.Thread(target=consume, name=ROLE, daemon=True)
    thread.start()
    return thread


def _stop_this_process() -> None:
    # uvicorn shuts down gracefully on SIGTERM: requests in flight are answered first.
    os.kill(os.getpid(), signal.SIGTERM)
