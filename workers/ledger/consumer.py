"""`flowpay run-ledger`: post every payment event, one database transaction per poll batch.

Offsets live in PostgreSQL (``ledger.cursors``), written in the same transaction as the
postings they produced, so a crash anywhere can neither post an event twice nor skip one. Kafka
only delivers: the consumer seeks to the stored offsets when partitions are assigned, and each
batch transaction checks, under a row lock on the partition's cursor, that the partition was
positioned where the database says it stands; if not (a failed read at assignment, another
consumer in a rebalance overlap) its messages are dropped and the partition re-seeks.

Replay swaps a rebuilt ledger in under an exclusive advisory lock that every batch transaction
holds shared; the batch reads ``ledger.state.generation`` after taking it. A new generation
means the offsets changed under us: the batch in hand is rolled back and dropped, and every
assigned partition re-seeks to the new ledger's stored offsets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Final

from workers.core import observe
from workers.core.config import Settings
from workers.core.db import connect
from workers.core.delivery import (
    TRANSIENT,
    DeadLetters,
    headers_of,
    offset_of,
    partition_of,
    retry_delays,
    topic_of,
)
from workers.core.heartbeat import Heartbeat
from workers.core.kafka import (
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
    consume_ready,
    make_consumer,
)
from workers.core.lifecycle import install_stop_handlers
from workers.core.metrics import OK, RETRY, LagProbe, handled
from workers.core.runner import log_consumer_error
from workers.core.topics import GROUP_LEDGER, topics
from workers.ledger import metrics
from workers.ledger.applier import Applier
from workers.ledger.posting import Item, NeedsRetry, decode_all
from workers.ledger.rules import STANDARD_RULES, PostingRules
from workers.ledger.store import LIVE_SCHEMA, Conn, Cursor, LedgerStore, Partition

log = logging.getLogger(__name__)

ROLE: Final = "ledger"
# With no messages coming, how often the consumer still looks for a swapped-in ledger (whose
# stored offsets may be behind what this consumer already read).
IDLE_GENERATION_CHECK_S: Final = 1.0


def serve(settings: Settings, rules: PostingRules = STANDARD_RULES) -> None:
    """Run the ledger in this process until SIGTERM/SIGINT (what ``flowpay run-ledger`` does)."""
    observe.start(settings, ROLE)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    metrics.start(settings)
    LedgerConsumer(settings, rules).run(stop)


class GenerationChanged(Exception):
    """Replay swapped a rebuilt ledger in since this consumer last positioned itself."""


class LedgerConsumer:
    def __init__(self, settings: Settings, rules: PostingRules = STANDARD_RULES) -> None:
        self.settings = settings
        self.topic = topics(settings).payments
        self.store = LedgerStore(LIVE_SCHEMA)
        self.dead_letters = DeadLetters(settings, GROUP_LEDGER, ROLE)
        self.applier = Applier(
            self.store,
            rules,
            max_attempts=settings.worker.max_attempts,
            dead_letter=self.dead_letters.send,
        )
        self._conn: Conn | None = None
        # Per assigned partition: the stored offset it was last positioned at.
        self._expected: dict[Partition, int] = {}
        self._generation: int | None = None
        self._next_idle_check = 0.0

    @property
    def positions(self) -> dict[Partition, int]:
        """The assigned partitions this consumer has positioned, and at which stored offset."""
        return dict(self._expected)

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(self.settings, GROUP_LEDGER, ROLE)
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        heartbeat = Heartbeat(ROLE)
        lag = LagProbe(GROUP_LEDGER)
        log.info("ledger posting %s as group %s", self.topic, GROUP_LEDGER)
        try:
            while not stop.is_set():
                heartbeat.beat()
                batch = consume_ready(
                    consumer, self.settings.worker.batch_size, self.settings.worker.poll_timeout_s
                )
                messages = [m for m in batch if _usable(m)]
                if messages:
                    self._handle(consumer, messages, stop)
                elif time.monotonic() >= self._next_idle_check:
                    self._next_idle_check = time.monotonic() + IDLE_GENERATION_CHECK_S
                    self._idle_check(consumer)
                lag.observe(consumer)
        finally:
            consumer.close()
            self.dead_letters.close()
            if self._conn is not None:
                self._conn.close()

    def _handle(self, consumer: Consumer, messages: list[Message], stop: threading.Event) -> None:
        for delay in retry_delays(self.settings.worker.retry_max_backoff_s):
            started = time.perf_counter()
            try:
                self._apply(consumer, messages)
                handled(GROUP_LEDGER, OK, started)
                return
            except GenerationChanged:
                self._follow_swap(consumer)
                return  # the batch in hand was read from offsets the new ledger does not hold
            except (*TRANSIENT, NeedsRetry) as exc:
                log.warning("ledger batch rolled back (%s); retrying in %.1fs", exc, delay)
            except Exception:
                log.exception("ledger batch failed; retrying in %.1fs", delay)
            handled(GROUP_LEDGER, RETRY, started)
            if stop.wait(delay):
                return  # nothing of this batch committed: it is read again after a restart

    def _idle_check(self, consumer: Consumer) -> None:
        try:
            conn = self._connection()
            with conn.transaction():
                generation = self.store.generation(conn)
        except Exception as exc:  # the next batch meets the same state and handles it
            log.warning("generation check failed: %s", exc)
            return
        if self._generation is not None and generation != self._generation:
            self._follow_swap(consumer)

    def _follow_swap(self, consumer: Consumer) -> None:
        log.info("the ledger was rebuilt by replay; re-seeking to its stored offsets")
        try:
            self._reseek(consumer, consumer.assignment())
        except Exception as exc:  # each partition is then found misplaced on its next batch
            log.warning("cannot re-seek now (%s)", exc)

    def _apply(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        by_partition: dict[Partition, list[Message]] = {}
        for message in messages:
            by_partition.setdefault((topic_of(message), partition_of(message)), []).append(message)
        conn = self._connection()
        started_ns = time.time_ns()
        misplaced: dict[Partition, int] = {}
        applied_before = self.applier.applied
        with conn.transaction():
            generation = self.store.generation(conn)
            if self._generation is not None and generation != self._generation:
                raise GenerationChanged
            self._generation = generation
            cursors = self.store.lock_cursors(conn, by_partition)
            items: list[Item] = []
            for partition, batch in by_partition.items():
                stored = cursors[partition].next_offset
                if self._expected.get(partition) != stored:
                    misplaced[partition] = stored
                    continue
                items += decode_all([m for m in batch if offset_of(m) >= stored])
            accepted = {p: c for p, c in cursors.items() if p not in misplaced}
            after = self.applier.apply(conn, items, accepted)
        metrics.committed(self.applier.applied - applied_before, self.applier.postings)
        self._committed(consumer, after)
        observe.recorded(ROLE, [headers_of(item.message) for item in items], started_ns)
        for (topic, number), offset in misplaced.items():
            log.info("%s[%d] re-seeks to its stored offset %d", topic, number, offset)
            self._seek(consumer, TopicPartition(topic, number, offset))

    def _committed(self, consumer: Consumer, cursors: dict[Partition, Cursor]) -> None:
        for partition, cursor in cursors.items():
            self._expected[partition] = cursor.next_offset
        # For lag monitoring only: the stored offsets in PostgreSQL are the truth.
        offsets = [TopicPartition(t, p, c.next_offset) for (t, p), c in cursors.items()]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:
                log.debug("offset commit for monitoring failed: %s", exc)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            stored, generation = self._stored_offsets()
        except Exception as exc:
            # The first batch of each partition finds it misplaced and re-seeks it.
            log.warning("cannot read the stored offsets at assignment (%s)", exc)
            consumer.assign(partitions)
            return
        for tp in partitions:
            tp.offset = stored.get(tp.partition, 0)
            self._expected[(tp.topic, tp.partition)] = tp.offset
        self._generation = generation
        log.info("assigned %s", ", ".join(f"[{tp.partition}]@{tp.offset}" for tp in partitions))
        consumer.assign(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", ", ".join(f"[{tp.partition}]" for tp in partitions))
        for tp in partitions:
            self._expected.pop((tp.topic, tp.partition), None)

    def _reseek(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._expected.clear()
        self._generation = None
        stored, generation = self._stored_offsets()
        self._generation = generation
        for tp in partitions:
            self._seek(
                consumer, TopicPartition(tp.topic, tp.partition, stored.get(tp.partition, 0))
            )

    def _seek(self, consumer: Consumer, tp: TopicPartition) -> None:
        try:
            consumer.seek(tp)
        except KafkaException as exc:
            log.warning("cannot seek [%d] yet (%s); the next batch retries", tp.partition, exc)
            return
        self._expected[(tp.topic, tp.partition)] = tp.offset

    def _stored_offsets(self) -> tuple[dict[int, int], int]:
        conn = self._connection()
        with conn.transaction():
            generation = self.store.generation(conn)
            return self.store.stored_offsets(conn, self.topic), generation

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = connect(self.settings, autocommit=True)
        return self._conn


def _usable(message: Message) -> bool:
    error = message.error()
    if error is not None:
        log_consumer_error(ROLE, error)
        return False
    return True
