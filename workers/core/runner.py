"""The one consumer loop every worker uses. Services write handlers, not loops.

For each message: decode, hand to the handler, and decide from the outcome alone:

    handler returns                  -> done; its offset may be committed
    EventError / PermanentError      -> dead-letter the original message, then done
    TransientError / lost database   -> wait with backoff and try again, never dead-letter
    any other exception              -> retry up to worker.max_attempts, then dead-letter

Offsets are committed (synchronously) only after every message before them is done, so a
crash anywhere redelivers rather than skips; handlers dedupe by event id.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import backoff
import psycopg

from workers.core.config import Settings
from workers.core.errors import EventError, PermanentError, TransientError
from workers.core.events import Event, Headers, decode
from workers.core.heartbeat import Heartbeat
from workers.core.kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
    make_consumer,
    make_producer,
    produce_sync,
)
from workers.core.topics import topics

log = logging.getLogger(__name__)

Handler = Callable[[Event, Message], None]


class _Stopped(Exception):
    """Stop was requested while a message was still unfinished: do not commit it."""


class ConsumerRunner:
    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        role: str,
        handler: Handler,
        subscribe_to: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.group = group
        self.role = role
        self.handler = handler
        self.topics = topics(settings)
        self.subscribe_to = subscribe_to or [self.topics.payments]
        self._dlq_producer: Producer | None = None

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(self.settings, self.group, self.role)
        consumer.subscribe(self.subscribe_to)
        heartbeat = Heartbeat(self.role)
        log.info("%s consuming %s as group %s", self.role, self.subscribe_to, self.group)
        try:
            while not stop.is_set():
                heartbeat.beat()
                batch = consumer.consume(
                    self.settings.worker.batch_size, self.settings.worker.poll_timeout_s
                )
                self._handle_batch(consumer, batch, stop)
        finally:
            consumer.close()
            if self._dlq_producer is not None:
                self._dlq_producer.flush(10)

    def _handle_batch(
        self, consumer: Consumer, batch: list[Message], stop: threading.Event
    ) -> None:
        done: dict[tuple[str, int], int] = {}
        try:
            for message in batch:
                if stop.is_set():
                    break  # the rest was never started: it will be redelivered
                error = message.error()
                if error is not None:
                    self._log_error(error)
                    continue
                self._process(message, stop)
                done[(_topic(message), _partition(message))] = _offset(message) + 1
        except _Stopped:
            log.info("%s stopping with a message unfinished; it will be redelivered", self.role)
        finally:
            if done:
                offsets = [TopicPartition(t, p, o) for (t, p), o in done.items()]
                consumer.commit(offsets=offsets, asynchronous=False)

    def _process(self, message: Message, stop: threading.Event) -> None:
        failures = 0
        for delay in _delays(self.settings.worker.retry_max_backoff_s):
            verdict: BaseException | None = None
            try:
                self.handler(decode(message.value(), _headers(message)), message)
                return
            except (EventError, PermanentError) as exc:
                verdict = exc
            except (TransientError, psycopg.OperationalError) as exc:
                log.warning("%s: transient error, retrying in %.1fs: %s", self.role, delay, exc)
            except Exception as exc:
                failures += 1
                log.warning("%s: attempt %d failed: %r", self.role, failures, exc, exc_info=True)
                if failures >= self.settings.worker.max_attempts:
                    verdict = exc
            if verdict is not None:
                try:
                    self._dead_letter(message, verdict)
                    return
                except TransientError as exc:
                    log.warning("%s: dead-letter topic unreachable: %s", self.role, exc)
            if stop.wait(delay):
                raise _Stopped

    def _dead_letter(self, message: Message, exc: BaseException) -> None:
        log.error(
            "%s: dead-lettering %s[%d]@%d: %s: %s",
            self.role, _topic(message), _partition(message), _offset(message),
            type(exc).__name__, exc,
        )  # fmt: skip
        if self._dlq_producer is None:
            self._dlq_producer = make_producer(self.settings, f"{self.role}-dlq")
        produce_sync(
            self._dlq_producer,
            self.topics.dead_letters,
            key=message.key(),
            value=message.value(),
            headers=_headers(message) + dead_letter_headers(self.group, message, exc),
        )

    def _log_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        log.warning("%s: consumer error: %s", self.role, error)


def _topic(message: Message) -> str:
    return message.topic() or ""


def _partition(message: Message) -> int:
    partition = message.partition()
    return -1 if partition is None else partition


def _offset(message: Message) -> int:
    offset = message.offset()
    return -1 if offset is None else offset


def _headers(message: Message) -> Headers:
    raw = message.headers()
    if isinstance(raw, dict):
        return list(raw.items())
    return [(str(k), v) for k, v in raw or []]


def dead_letter_headers(group: str, message: Message, exc: BaseException) -> Headers:
    """Where a dead letter came from and why, as Kafka headers."""
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return [
        ("dlq_group", group.encode()),
        ("dlq_topic", _topic(message).encode()),
        ("dlq_partition", str(_partition(message)).encode()),
        ("dlq_offset", str(_offset(message)).encode()),
        ("dlq_error_type", type(exc).__name__.encode()),
        ("dlq_error_message", detail[:2000].encode()),
        ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
    ]


def _delays(max_backoff_s: float) -> Iterator[float]:
    """Exponential backoff with full jitter, capped; endless (the caller stops on success)."""
    for value in backoff.expo(base=2, factor=0.1, max_value=max_backoff_s):
        if value is not None:  # backoff's generators open with a bare yield
            yield backoff.full_jitter(value)
