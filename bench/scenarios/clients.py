"""Scenario 5, Kafka clients: confluent-kafka (librdkafka) and kafka-python side by side,
producing and consuming the same real-sized events with the same settings."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]
from kafka import TopicPartition as KpPartition

from bench.env import Bench, isolated
from bench.events import encode_all, initiated_many, produce_all
from workers.core.config import Settings
from workers.core.events import Encoded
from workers.core.kafka import (
    TopicPartition,
    bootstrap_servers,
    create_topics,
    make_consumer,
    make_producer,
)

# Shared by both clients. lz4 is left out: kafka-python would need another package for it.
ACKS, LINGER_MS, BATCH = "all", 5, 500


@dataclass(frozen=True)
class ClientSizes:
    messages: int = 200_000


def run(base: Settings, sizes: ClientSizes) -> dict[str, Any]:
    with isolated(base, "clients") as bench:
        # A thousand real events, repeated: the same sizes as FlowPay's, cheap to make.
        sample = encode_all(initiated_many(min(1000, sizes.messages)))
        messages = [sample[n % len(sample)] for n in range(sizes.messages)]
        results = {
            name: _both(bench, name, produce, consume, messages)
            for name, produce, consume in (
                ("confluent-kafka", _confluent_produce, _confluent_consume),
                ("kafka-python", _kafka_python_produce, _kafka_python_consume),
            )
        }
    return {
        "sizes": sizes.__dict__,
        "message_bytes": len(sample[0].value),
        "settings": {
            "acks": ACKS,
            "linger_ms": LINGER_MS,
            "compression": "none",
            "idempotence": True,
            "isolation": "read_committed",
        },
        "clients": results,
    }


Produce = Callable[[Bench, str, list[Encoded]], None]
Consume = Callable[[Bench, str, int], None]


def _both(
    bench: Bench, name: str, produce: Produce, consume: Consume, messages: list[Encoded]
) -> dict[str, dict[str, float]]:
    topic = f"{bench.settings.kafka.topic_prefix}.clients.{name}"
    create_topics(bench.settings, [topic])
    return {
        "produce": _timed(len(messages), lambda: produce(bench, topic, messages)),
        "consume": _timed(len(messages), lambda: consume(bench, topic, len(messages))),
    }


def _timed(count: int, work: Callable[[], None]) -> dict[str, float]:
    # process_time counts every thread of this process: librdkafka's and kafka-python's too.
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "messages_per_s": round(count / wall, 1),
        "seconds": round(wall, 2),
        "cpu_s_per_10k": round(cpu / count * 10_000, 3),
    }


def _confluent_produce(bench: Bench, topic: str, messages: list[Encoded]) -> None:
    overrides = {"acks": ACKS, "linger.ms": LINGER_MS, "compression.type": "none"}
    if produce_all(make_producer(bench.settings, "outbox", **overrides), topic, messages):
        raise RuntimeError("confluent-kafka: some messages were not acknowledged")


def _confluent_consume(bench: Bench, topic: str, count: int) -> None:
    consumer = make_consumer(bench.settings, f"bench-{uuid.uuid4().hex}", "operator")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(bench.settings.kafka.partitions)])
    seen = 0
    while seen < count:
        seen += sum(1 for m in consumer.consume(BATCH, 1.0) if m.error() is None)
    consumer.close()


def _kafka_python_produce(bench: Bench, topic: str, messages: list[Encoded]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers(bench.settings),
        acks=ACKS,
        linger_ms=LINGER_MS,
        enable_idempotence=True,
        max_in_flight_requests_per_connection=5,
    )
    for m in messages:
        headers = [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in m.headers]
        producer.send(topic, key=m.key, value=m.value, headers=headers)
    producer.flush(300)
    producer.close()


def _kafka_python_consume(bench: Bench, topic: str, count: int) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers(bench.settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_poll_records=BATCH,
    )
    consumer.assign([KpPartition(topic, p) for p in range(bench.settings.kafka.partitions)])
    consumer.seek_to_beginning()
    seen = 0
    while seen < count:
        seen += sum(len(batch) for batch in consumer.poll(timeout_ms=1000).values())
    consumer.close()


def table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = [
        [name, step, f"{figures['messages_per_s']:.0f}", f"{figures['cpu_s_per_10k']:.3f}"]
        for name, steps in result["clients"].items()
        for step, figures in steps.items()
    ]
    count, size = result["sizes"]["messages"], result["message_bytes"]
    title = f"5. Kafka clients ({count:,} messages of {size} B)"
    return title, ["client", "step", "messages/s", "CPU s per 10,000"], rows
