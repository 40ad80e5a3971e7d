"""Reading and writing topics from tests, with real clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from workers.core.config import Settings
from workers.core.events import Event, encode
from workers.core.kafka import Message, TopicPartition, make_consumer, make_producer, produce_sync
from workers.core.topics import topics


def produce_raw(
    settings: Settings,
    topic: str,
    values: Sequence[bytes | None],
    *,
    key: bytes = b"k",
    headers: Sequence[tuple[str, str | bytes | None]] | None = None,
) -> None:
    producer = make_producer(settings, "operator")
    for value in values:
        produce_sync(producer, topic, key=key, value=value, headers=headers)


def read_topic(
    settings: Settings, topic: str, count: int, timeout_s: float = 30.0
) -> list[Message]:
    """The first ``count`` messages of ``topic`` (all partitions), waiting up to ``timeout_s``."""
    consumer = make_consumer(settings, f"reader-{uuid.uuid4().hex}", "operator")
    consumer.subscribe([topic])
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < count and time.monotonic() < deadline:
            for message in consumer.consume(count - len(got), 0.5):
                if message.error() is None:
                    got.append(message)
    finally:
        consumer.close()
    return got


def committed_total(settings: Settings, group: str, topic: str) -> int:
    """Sum over partitions of the group's committed offsets on ``topic`` (0 where none)."""
    consumer = make_consumer(settings, group, "operator")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


def headers_of(message: Message) -> dict[str, str]:
    raw = message.headers() or []
    # A consumed message's headers are a list of pairs (only a producer is given a dict).
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in pairs}


def produce_events(settings: Settings, events: list[Event], key: bytes | None = None) -> None:
    """Publish events to the payment topic in one flush; fails the test if any is not acked."""
    producer = make_producer(settings, "operator")
    errors: list[object] = []
    for event in events:
        encoded = encode(event)
        producer.produce(
            topics(settings).payments,
            key=key or encoded.key,
            value=encoded.value,
            headers=encoded.headers,
            on_delivery=lambda error, _m: errors.append(error) if error else None,
        )
    assert producer.flush(30) == 0, "not every event was acknowledged"
    assert not errors, errors
