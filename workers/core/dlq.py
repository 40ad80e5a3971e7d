"""The dead-letter topic as the operator sees it: list, show, replay.

A dead letter's id is ``<partition>:<offset>`` in the dead-letter topic. Replaying re-publishes
the original key, value and headers to the source topic, with a ``dlq_replay_of`` header linking
back; every consumer group sees it again, and those that had handled the event skip it by its id.
A dead letter is replayed once unless forced (``ops.dlq_replays`` remembers).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import Connection

from workers.core.config import Settings
from workers.core.errors import EventError, FlowPayError, NotFoundError
from workers.core.events import Headers, decode, header
from workers.core.kafka import (
    TopicPartition,
    make_consumer,
    make_producer,
    produce_sync,
    watermarks,
)
from workers.core.sql import load_queries
from workers.core.topics import GROUP_PREFIX_DLQ_READER, topics

REPLAY_HEADER = "dlq_replay_of"


class AlreadyReplayed(FlowPayError):
    pass


@dataclass(frozen=True)
class DeadLetter:
    id: str
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def group(self) -> str | None:
        return self.header("dlq_group")

    def summary(self) -> dict[str, Any]:
        topic, partition, offset = (
            self.header(f"dlq_{n}") for n in ("topic", "partition", "offset")
        )
        message = (self.header("dlq_error_message") or "").strip().splitlines()
        return {
            "id": self.id,
            "failed_at": self.header("dlq_failed_at"),
            "group": self.group,
            "source": f"{topic}[{partition}]@{offset}",
            "error_type": self.header("dlq_error_type"),
            "error": message[-1] if message else "",
        }

    def decoded(self) -> Any:
        """The value decoded as far as it goes: the event, else JSON, else text."""
        try:
            return json.loads(decode(self.value, self.headers).model_dump_json())
        except EventError:
            pass
        try:
            return json.loads(self.value or b"")
        except ValueError:
            return (self.value or b"").decode("utf-8", "replace")


def read_all(settings: Settings, group: str | None = None) -> list[DeadLetter]:
    """Every dead letter now in the topic (oldest first per partition), optionally one group's."""
    topic = topics(settings).dead_letters
    consumer = make_consumer(settings, f"{GROUP_PREFIX_DLQ_READER}{uuid.uuid4().hex}", "operator")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: watermarks(consumer, topic, p)[1] for p in partitions}
        letters: list[DeadLetter] = []
        wanted = [TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0]
        if wanted:
            consumer.assign(wanted)
            letters = _drain(consumer, ends)
    finally:
        consumer.close()
    return [d for d in letters if group is None or d.group == group]


def _drain(consumer: Any, ends: dict[int, int]) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    remaining = {p for p, end in ends.items() if end > 0}
    while remaining:
        for message in consumer.consume(500, 2.0):
            if message.error() is not None:
                continue
            partition, offset = message.partition(), message.offset()
            raw = message.headers() or []
            letters.append(
                DeadLetter(f"{partition}:{offset}", message.key(), message.value(), list(raw))
            )
            if offset + 1 >= ends[partition]:
                remaining.discard(partition)
    return letters


def find(settings: Settings, dead_letter_id: str) -> DeadLetter:
    for letter in read_all(settings):
        if letter.id == dead_letter_id:
            return letter
    raise NotFoundError(f"no dead letter {dead_letter_id}")


def replay(
    settings: Settings, conn: Connection[Any], letter: DeadLetter, *, force: bool = False
) -> None:
    """Re-publish one dead letter to its source topic (once, unless ``force``)."""
    topic = topics(settings).dead_letters
    queries = load_queries("workers.core")
    ids = {"topic": topic, "dead_letter": letter.id}
    seen = conn.execute(queries["dlq_replays_of"], ids).fetchone()
    if seen is not None and seen[0] and not force:
        raise AlreadyReplayed(
            f"dead letter {letter.id} was replayed already (use --force to send it again)"
        )
    source = letter.header("dlq_topic") or topics(settings).payments
    headers = [(k, v) for k, v in letter.headers if not k.startswith("dlq_")]
    headers.append((REPLAY_HEADER, f"{topic}:{letter.id}".encode()))
    produce_sync(
        make_producer(settings, "operator"),
        source,
        key=letter.key,
        value=letter.value,
        headers=headers,
    )
    with conn.transaction():
        conn.execute(queries["dlq_replay_insert"], {**ids, "forced": force})
