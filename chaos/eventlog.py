"""The payment event log as Kafka holds it: every message, the end offsets, each group's place."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from workers.core.config import Settings
from workers.core.events import Event, decode
from workers.core.kafka import Consumer, TopicPartition, make_consumer, watermarks
from workers.core.topics import GROUP_API, GROUP_NOTIFIER, GROUP_PROCESSOR, topics

# Groups that commit their offsets to Kafka (the ledger keeps its own in PostgreSQL).
KAFKA_GROUPS = (GROUP_API, GROUP_PROCESSOR, GROUP_NOTIFIER)


@dataclass(frozen=True)
class Logged:
    partition: int
    offset: int
    event: Event | None  # None: a message that is not an event
    raw: bytes


def _reader(settings: Settings) -> Consumer:
    # A group of its own that never commits: reading must not move anyone's offsets.
    return make_consumer(settings, f"chaos-reader-{uuid.uuid4().hex}", "operator")


def partitions(consumer: Consumer, topic: str) -> list[int]:
    return sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)


def end_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    name = topic or topics(settings).payments
    consumer = _reader(settings)
    try:
        return {p: watermarks(consumer, name, p)[1] for p in partitions(consumer, name)}
    finally:
        consumer.close()


def committed(settings: Settings, group: str) -> dict[int, int]:
    """The group's committed offset per partition of the payments topic (0 where none)."""
    name = topics(settings).payments
    consumer = make_consumer(settings, group, "operator")
    try:
        wanted = [TopicPartition(name, p) for p in partitions(consumer, name)]
        return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(wanted, timeout=10)}
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str | None = None) -> list[Logged]:
    """Every message of the topic up to its end offsets as they are now."""
    name = topic or topics(settings).payments
    ends = end_offsets(settings, name)
    consumer = _reader(settings)
    got: list[Logged] = []
    try:
        left = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(name, p, 0) for p in left])
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            for message in consumer.consume(500, 1.0):
                if message.error() is None:
                    got.append(
                        _logged(
                            message.partition(),
                            message.offset(),
                            message.value(),
                            message.headers(),
                        )
                    )
            # Positions, not the last offset read: a control record may hold the end offset.
            for tp in consumer.position([TopicPartition(name, p) for p in left]):
                if tp.offset >= ends[tp.partition]:
                    left.discard(tp.partition)
    finally:
        consumer.close()
    return got


def _logged(partition: Any, offset: Any, value: bytes | None, headers: object) -> Logged:
    try:
        event: Event | None = decode(value, headers)  # type: ignore[arg-type]
    except Exception:
        event = None
    return Logged(partition, offset, event, value or b"")
