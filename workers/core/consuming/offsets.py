"""Where a subscriber's offsets live: Kafka's committed offsets, or a store of its own.

Everything here that touches the consumer runs on the engine's Kafka thread (the rebalance
callbacks too, which librdkafka calls from inside a poll).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Protocol

from workers.core.consuming.batch import Batch, DeadLetterSink, Partition, Received
from workers.core.consuming.tracker import OffsetTracker
from workers.core.delivery import offset_of, partition_of, topic_of
from workers.core.kafka import Consumer, KafkaException, Message, TopicPartition, commit_offsets

log = logging.getLogger(__name__)

# How often offsets are committed to Kafka while work flows (and at every stop and rebalance);
# a commit is a broker round trip and a write to the group's log, so not one per batch. In
# store mode the commit only shows lag to monitoring, as often.
COMMIT_EVERY_S: Final = 0.5
# Store mode: with no messages coming, how often the engine still asks the store whether its
# offsets moved (the ledger: a replay swapped a rebuilt ledger in, maybe behind what was read).
IDLE_CHECK_EVERY_S: Final = 1.0


class OffsetStore(Protocol):
    """A subscriber that keeps its offsets in its own database, written in the transaction of
    the effects they cover (so a crash can neither apply a message twice nor skip one)."""

    def load(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """The stored next offset of each partition (absent: from the start)."""
        ...

    def moved(self) -> bool:
        """Whether the stored offsets changed under the engine since the last ``load``."""
        ...

    def reject(self, batch: Batch, exc: BaseException) -> None:
        """Record the batch's one message as dead-lettered (it has been sent to the
        dead-letter topic) and its offset as done, in one transaction; may ask for a re-seek
        as a handler may."""
        ...


class KafkaOffsets:
    """Offsets committed to Kafka once the effects are durable, below the lowest unfinished
    message of each partition.

    The tracker is kept on the engine's loop and read on its Kafka thread (commits, rebalance
    callbacks): a lock guards it, never held across a broker round trip."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.tracker = OffsetTracker()
        self._lock = threading.Lock()
        self._last_commit = 0.0

    def batch(self, items: Sequence[Received], dead_letter: DeadLetterSink) -> Batch:
        return Batch(items, dead_letter=dead_letter)

    def started(self, items: Iterable[Received]) -> None:
        with self._lock:
            for item in items:
                self.tracker.started(item.partition, item.offset)

    def passed_over(self, message: Message) -> None:
        partition = (topic_of(message), partition_of(message))
        with self._lock:
            self.tracker.started(partition, offset_of(message))
            self.tracker.finished(partition, offset_of(message))

    def finished(self, batch: Batch) -> None:
        with self._lock:
            for item in batch.items:
                self.tracker.finished(item.partition, item.offset)

    def stale(self, _item: Received) -> bool:
        return False

    def settle(self, _consumer: Consumer, _ends: Mapping[Partition, int]) -> None:
        """After a unit of work: nothing to do, its offsets commit with the next commit."""

    def commit(self, consumer: Consumer, *, now: bool = False) -> None:
        if not now and time.monotonic() - self._last_commit < COMMIT_EVERY_S:
            return
        self._last_commit = time.monotonic()
        with self._lock:
            ready = self.tracker.committable()
        if not ready:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in ready.items()]
        if commit_offsets(consumer, offsets, role=self.role):
            with self._lock:
                self.tracker.mark_committed(ready)

    def idle(self, _consumer: Consumer) -> None:
        """Nothing to look at between batches."""

    def assigned(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        """The client positions the partitions at the group's committed offsets by itself."""

    def revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The next owner starts exactly where this one stopped (what had not finished in the
        # drain before this is delivered again).
        self.commit(consumer, now=True)
        self.lost(partitions)

    def lost(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self.tracker.forget((tp.topic, tp.partition) for tp in partitions)


class StoredOffsets:
    """Offsets kept by the subscriber (``OffsetStore``); Kafka only delivers.

    The engine seeks each assigned partition to its stored offset and tells each batch where it
    positioned them; the handler, under its own lock, checks that against the store and asks
    for a re-seek when they differ. A partition whose messages were not all applied is sought
    back to where the store stands before anything more of it is read."""

    def __init__(self, store: OffsetStore, role: str) -> None:
        self.store = store
        self.role = role
        # Per assigned partition: the stored offset it is positioned at.
        self.positions: dict[Partition, int] = {}
        self._reload = False
        self._moved: set[Partition] = set()
        self._next_idle_check = 0.0
        # Positions applied since the last report to Kafka, for lag monitoring.
        self._unreported: dict[Partition, int] = {}
        self._last_report = 0.0

    def batch(self, items: Sequence[Received], dead_letter: DeadLetterSink) -> Batch:
        wanted = {item.partition for item in items}
        positions = {p: o for p, o in self.positions.items() if p in wanted}
        return Batch(items, dead_letter=dead_letter, positions=positions)

    def started(self, _items: Iterable[Received]) -> None:
        """Nothing to track: the store says what is done."""

    def passed_over(self, message: Message) -> None:
        raise AssertionError("a subscriber that stores its offsets ignores no message")

    def finished(self, batch: Batch) -> None:
        if batch.reload:
            self._reload = True
            return
        for partition, end in batch.ends.items():
            if partition in batch.seeks:
                self.positions[partition] = batch.seeks[partition]
                self._moved.add(partition)
            elif partition in self.positions:
                self.positions[partition] = end

    def stale(self, item: Received) -> bool:
        """The item's partition is to be read again: applying it now could skip others."""
        return self._reload or item.partition in self._moved

    def settle(self, consumer: Consumer, ends: Mapping[Partition, int]) -> None:
        """After a unit of work: partitions not at its end are read again from the store."""
        behind = [p for p, end in ends.items() if self.positions.get(p) != end]
        if self._reload:
            self._reposition(consumer, [(tp.topic, tp.partition) for tp in consumer.assignment()])
        elif behind:
            self._seek_or_reload(consumer, behind)
        self._reload = False
        self._moved.clear()
        self._unreported.update((p, o) for p, o in self.positions.items() if p in ends)

    def commit(self, consumer: Consumer, *, now: bool = False) -> None:
        """The store committed them with the effects; Kafka is told, when due, for lag
        monitoring only (the stored offsets are the truth)."""
        if not self._unreported:
            return
        if not now and time.monotonic() - self._last_report < COMMIT_EVERY_S:
            return
        self._last_report = time.monotonic()
        done = [TopicPartition(t, n, o) for (t, n), o in self._unreported.items()]
        self._unreported.clear()
        try:
            consumer.commit(offsets=done, asynchronous=True)
        except KafkaException as exc:
            log.debug("offset commit for monitoring failed: %s", exc)

    def idle(self, consumer: Consumer) -> None:
        if time.monotonic() < self._next_idle_check:
            return
        self._next_idle_check = time.monotonic() + IDLE_CHECK_EVERY_S
        try:
            moved = self.store.moved()
        except Exception as exc:  # the next batch meets the same state and handles it
            log.warning("%s: cannot check the stored offsets now: %s", self.role, exc)
            return
        if moved:
            log.info("%s: the stored offsets changed; re-seeking to them", self.role)
            self._reposition(consumer, [(tp.topic, tp.partition) for tp in consumer.assignment()])

    def assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            stored = self.store.load([(tp.topic, tp.partition) for tp in partitions])
        except Exception as exc:
            # Positions unknown: the first batch of each partition finds it misplaced.
            log.warning("%s: cannot read the stored offsets at assignment (%s)", self.role, exc)
            consumer.assign(partitions)
            return
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), 0)
            self.positions[(tp.topic, tp.partition)] = tp.offset
        log.info(
            "%s: assigned %s",
            self.role,
            ", ".join(f"[{tp.partition}]@{tp.offset}" for tp in partitions),
        )
        consumer.assign(partitions)

    def revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commit(consumer, now=True)
        self.lost(partitions)

    def lost(self, partitions: list[TopicPartition]) -> None:
        log.info("%s: revoked %s", self.role, ", ".join(f"[{tp.partition}]" for tp in partitions))
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)
            self._unreported.pop((tp.topic, tp.partition), None)

    def _seek_or_reload(self, consumer: Consumer, partitions: list[Partition]) -> None:
        unknown = [p for p in partitions if p not in self.positions]
        if unknown:
            self._reposition(consumer, unknown)
        for partition in partitions:
            if partition in self.positions:
                self._seek(consumer, partition, self.positions[partition])

    def _reposition(self, consumer: Consumer, partitions: list[Partition]) -> None:
        for partition in partitions:
            self.positions.pop(partition, None)
        try:
            stored = self.store.load(partitions)
        except Exception as exc:  # each partition is then found misplaced on its next batch
            log.warning("%s: cannot re-seek now (%s)", self.role, exc)
            return
        for partition in partitions:
            self._seek(consumer, partition, stored.get(partition, 0))

    def _seek(self, consumer: Consumer, partition: Partition, offset: int) -> None:
        topic, number = partition
        log.info("%s: %s[%d] re-seeks to its stored offset %d", self.role, topic, number, offset)
        try:
            consumer.seek(TopicPartition(topic, number, offset))
        except KafkaException as exc:
            log.warning(
                "%s: cannot seek [%d] yet (%s); its next batch retries", self.role, number, exc
            )
            self.positions.pop(partition, None)
            return
        self.positions[partition] = offset
