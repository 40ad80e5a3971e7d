"""`flowpay run-ledger`: post every payment event, one database transaction per poll batch.

The ledger runs on the consumer engine (``workers.core.consuming``) with its offsets stored in
PostgreSQL (``ledger.cursors``), written in the same transaction as the postings they produced,
so a crash anywhere can neither post an event twice nor skip one. Kafka only delivers: the
engine seeks each assigned partition to its stored offset, and each batch transaction checks,
under a row lock on the partition's cursor, that the partition was positioned where the
database says it stands; if not (a failed read at assignment, another consumer in a rebalance
overlap) its messages are left alone and the engine re-seeks the partition.

Replay swaps a rebuilt ledger in under an exclusive advisory lock that every batch transaction
holds shared; the batch reads ``ledger.state.generation`` after taking it. A new generation
means the offsets changed under us: the batch in hand is dropped, and every assigned partition
re-seeks to the new ledger's stored offsets (the engine also asks, while idle, whether the
generation moved).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Final

from workers.core import heap, observe
from workers.core.config import Settings
from workers.core.consuming import (
    Batch,
    Partition,
    Received,
    Routes,
    Subscriber,
    register,
    run,
)
from workers.core.db import connect
from workers.core.events import EventType
from workers.core.lifecycle import install_stop_handlers
from workers.core.topics import GROUP_LEDGER, topics
from workers.ledger import metrics
from workers.ledger.applier import Applier
from workers.ledger.rules import STANDARD_RULES, PostingRules
from workers.ledger.store import LIVE_SCHEMA, Conn, Cursor, LedgerStore

log = logging.getLogger(__name__)

ROLE: Final = "ledger"


def serve(settings: Settings, rules: PostingRules = STANDARD_RULES) -> None:
    """Run the ledger in this process until SIGTERM/SIGINT (what ``flowpay run-ledger`` does)."""
    observe.start(settings, ROLE)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    metrics.start(settings)
    ledger = Ledger(settings, rules)
    heap.settle()
    consume(settings, ledger, stop)


def consume(settings: Settings, ledger: Ledger, stop: threading.Event) -> None:
    run(settings, subscriber(ledger), stop)


def subscriber(ledger: Ledger) -> Subscriber[Ledger]:
    return Subscriber(GROUP_LEDGER, ROLE, ROUTES, ledger, store=ledger, principal="ledger")


class Ledger:
    """The ledger's one handler, and the store of its offsets (an ``OffsetStore``)."""

    def __init__(self, settings: Settings, rules: PostingRules = STANDARD_RULES) -> None:
        self.settings = settings
        self.topic = topics(settings).payments
        self.store = LedgerStore(LIVE_SCHEMA)
        self.applier = Applier(self.store, rules, max_attempts=settings.worker.max_attempts)
        self._conn: Conn | None = None
        # The generation the stored offsets were last read in.
        self._generation: int | None = None

    def post(self, batch: Batch) -> None:
        """The batch's events through the posting rules, with their offsets, in one
        transaction (what cannot apply is dead-lettered and recorded)."""
        conn = self._connection()
        applied_before = self.applier.applied
        with conn.transaction():
            cursors = self._positioned(conn, batch)
            items = [
                i
                for i in batch.items
                if i.partition in cursors and i.offset >= cursors[i.partition].next_offset
            ]
            self.applier.apply(conn, items, cursors, batch.dead_letter)
        self.applier.committed()
        metrics.committed(self.applier.applied - applied_before, self.applier.postings)

    def load(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        conn = self._connection()
        with conn.transaction():
            self._generation = self.store.generation(conn)
            stored = self.store.stored_offsets(conn, self.topic)
        return {(t, p): stored.get(p, 0) for t, p in partitions if t == self.topic}

    def moved(self) -> bool:
        conn = self._connection()
        with conn.transaction():
            generation = self.store.generation(conn)
        return self._generation is not None and generation != self._generation

    def reject(self, batch: Batch, exc: BaseException) -> None:
        conn = self._connection()
        with conn.transaction():
            cursors = self._positioned(conn, batch)
            for item in _unapplied(batch, cursors):
                cursors = self.applier.record_rejected(conn, item, cursors, exc)

    def _positioned(self, conn: Conn, batch: Batch) -> dict[Partition, Cursor]:
        """Under the swap lock and the cursors' row locks: the cursors of the partitions that
        are where the batch was read from; the engine re-seeks the others (all of them when a
        replay swapped the ledger in)."""
        generation = self.store.generation(conn)
        if self._generation is not None and generation != self._generation:
            log.info("the ledger was rebuilt by replay; re-seeking to its stored offsets")
            batch.reposition()
            return {}
        self._generation = generation
        cursors = self.store.lock_cursors(conn, batch.ends)
        positioned: dict[Partition, Cursor] = {}
        for partition, cursor in cursors.items():
            if batch.positions.get(partition) == cursor.next_offset:
                positioned[partition] = cursor
            else:
                batch.reseek(partition, cursor.next_offset)
        return positioned

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = connect(self.settings, "ledger", autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _unapplied(batch: Batch, cursors: dict[Partition, Cursor]) -> list[Received]:
    """The batch's messages of positioned partitions that their cursors have not passed."""
    return [
        i
        for i in batch.items
        if i.partition in cursors and i.offset >= cursors[i.partition].next_offset
    ]


# Every event goes through the posting rules, which decide per type what it posts (some post
# nothing and are only recorded): the ledger applies, and keeps the offset of, every event.
ROUTES: Final = register(
    Routes[Ledger](
        "ledger",
        {
            EventType.INITIATED: Ledger.post,
            EventType.AUTHORIZATION_REQUESTED: Ledger.post,
            EventType.PROCESSING: Ledger.post,
            EventType.REQUIRES_CAPTURE: Ledger.post,
            EventType.REQUIRES_ACTION: Ledger.post,
            EventType.CAPTURE_REQUESTED: Ledger.post,
            EventType.CANCEL_REQUESTED: Ledger.post,
            EventType.SUCCEEDED: Ledger.post,
            EventType.FAILED: Ledger.post,
            EventType.CANCELED: Ledger.post,
            EventType.REFUND_REQUESTED: Ledger.post,
            EventType.REFUNDED: Ledger.post,
            EventType.REFUND_FAILED: Ledger.post,
            EventType.CHARGE_REVERSED: Ledger.post,
            EventType.GATEWAY_REPORTED: Ledger.post,
            EventType.PAYOUT_REQUESTED: Ledger.post,
            EventType.PAYOUT_PAID: Ledger.post,
            EventType.PAYOUT_FAILED: Ledger.post,
        },
    )
)
