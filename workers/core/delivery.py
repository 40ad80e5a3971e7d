"""What every consumer shares: the verdict on a failure, backoff, and the dead-letter topic.

The one rule set for a handler's outcome (the consumer engine, ``workers.core.consuming``, and
the ledger's applier decide with it, so they cannot drift apart):

    EventError / PermanentError      -> dead-letter now
    TransientError / lost database   -> retry with backoff, without limit, never dead-letter
    any other exception              -> retry up to worker.max_attempts, then dead-letter
"""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime

import psycopg

from workers.core import correlation
from workers.core.config import KafkaRole, Settings
from workers.core.errors import EventError, PermanentError, TransientError
from workers.core.events import Headers
from workers.core.kafka import Message, Producer, make_producer, produce_sync
from workers.core.metrics import dead_lettered
from workers.core.topics import topics

log = logging.getLogger(__name__)

TRANSIENT = (TransientError, psycopg.OperationalError)


class Verdicts:
    """Counts one message's unexpected failures and says when to give up on it."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.failures = 0

    def dead_letter(self, exc: BaseException) -> bool:
        """True: dead-letter the message now. False: retry it after a backoff."""
        if isinstance(exc, (EventError, PermanentError)):
            return True
        if isinstance(exc, TRANSIENT):
            return False
        self.failures += 1
        return self.failures >= self.max_attempts


# The first retry comes within this; each later one within twice the last, up to the cap.
FIRST_RETRY_S = 0.1


def topic_of(message: Message) -> str:
    return message.topic() or ""


def partition_of(message: Message) -> int:
    partition = message.partition()
    return -1 if partition is None else partition


def offset_of(message: Message) -> int:
    offset = message.offset()
    return -1 if offset is None else offset


def headers_of(message: Message) -> Headers:
    raw = message.headers()
    if isinstance(raw, dict):
        return list(raw.items())
    return [(str(k), v) for k, v in raw or []]


def dead_letter_headers(group: str, message: Message, exc: BaseException) -> Headers:
    """Where a dead letter came from and why, as Kafka headers."""
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return [
        ("dlq_group", group.encode()),
        ("dlq_topic", topic_of(message).encode()),
        ("dlq_partition", str(partition_of(message)).encode()),
        ("dlq_offset", str(offset_of(message)).encode()),
        ("dlq_error_type", type(exc).__name__.encode()),
        ("dlq_error_message", detail[:2000].encode()),
        ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
    ]


class DeadLetters:
    """Publishes failed messages, unchanged, to the dead-letter topic with why they failed."""

    def __init__(self, settings: Settings, group: str, role: KafkaRole) -> None:
        self.settings = settings
        self.group = group
        self.role = role
        self.topic = topics(settings).dead_letters
        self._producer: Producer | None = None

    def send(self, message: Message, exc: BaseException) -> None:
        """Raises TransientError when Kafka does not acknowledge it."""
        # The line carries the message's payment id, whoever calls (a batch binds none).
        with correlation.bound(**correlation.of_headers(headers_of(message))):
            log.error(
                "%s: dead-lettering %s[%d]@%d: %s: %s",
                self.role, topic_of(message), partition_of(message), offset_of(message),
                type(exc).__name__, exc,
            )  # fmt: skip
        if self._producer is None:
            self._producer = make_producer(self.settings, self.role)
        produce_sync(
            self._producer,
            self.topic,
            key=message.key(),
            value=message.value(),
            headers=headers_of(message) + dead_letter_headers(self.group, message, exc),
        )
        dead_lettered(self.group)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
