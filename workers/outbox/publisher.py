"""Produce one batch of outbox rows to Kafka and wait until every one is acknowledged."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from workers.core.config import Settings
from workers.core.errors import TransientError
from workers.core.kafka import KafkaError, KafkaException, Message, Producer, make_producer
from workers.outbox.store import OutboxRow

log = logging.getLogger(__name__)

ROLE: Final = "outbox"
# librdkafka settles every message by message.timeout.ms; the margin covers its timer's slack.
_ACK_MARGIN_S = 5.0
# How often the wait for acknowledgements looks at the stop event and beats the heartbeat.
_ACK_SLICE_S = 0.2
# After a stop request, acknowledgements still this close are worth waiting for: a batch
# abandoned now is published again by the next relay.
_STOP_DRAIN_S = 2.0
_CLOSE_FLUSH_S = 5.0


class NotAcknowledged(TransientError):
    """Kafka did not acknowledge every message of a batch; the batch must not be marked."""


@dataclass
class _Acks:
    delivered: int = 0
    errors: list[KafkaError] = field(default_factory=list)

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.errors.append(error)

    @property
    def settled(self) -> int:
        return self.delivered + len(self.errors)


@dataclass(frozen=True)
class Sent:
    """A batch handed to the producer, its acknowledgements still arriving."""

    acks: _Acks
    count: int


class BatchPublisher:
    """An idempotent producer that publishes a batch all-or-nothing (as far as we can tell)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout_s = settings.outbox.delivery_timeout_s
        self._producer: Producer | None = None

    def send(self, topic_of: Callable[[OutboxRow], str], rows: Sequence[OutboxRow]) -> Sent:
        """Hand ``rows`` to the producer in order, each to its topic; ``confirm`` waits for
        their acknowledgements."""
        producer = self._ensure_producer()
        acks = _Acks()
        try:
            for row in rows:
                _produce(producer, topic_of(row), row, acks)
        except KafkaException as exc:
            self.abandon()
            raise NotAcknowledged(f"Kafka refused a message: {exc.args[0]}") from None
        return Sent(acks, len(rows))

    def confirm(
        self, sent: Sent, stop: threading.Event, tick: Callable[[], None] = lambda: None
    ) -> None:
        """Return once every message of ``sent`` is acked, else raise NotAcknowledged."""
        producer = self._ensure_producer()
        self._await(producer, sent.acks, sent.count, stop, tick)
        if sent.acks.delivered < sent.count:
            self._after_failure(sent.acks)
            raise NotAcknowledged(_describe(sent.acks, sent.count))

    def close(self) -> None:
        if self._producer is not None:
            left = self._producer.flush(_CLOSE_FLUSH_S)
            if left:
                log.warning(
                    "closing with %d messages unacknowledged; they will be sent again", left
                )
            self._producer = None

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            timeout_ms = max(1, int(self.timeout_s * 1000))
            self._producer = make_producer(
                self.settings, ROLE, **{"message.timeout.ms": timeout_ms}
            )
        return self._producer

    def _await(
        self,
        producer: Producer,
        acks: _Acks,
        expected: int,
        stop: threading.Event,
        tick: Callable[[], None],
    ) -> None:
        deadline = time.monotonic() + self.timeout_s + _ACK_MARGIN_S
        while acks.settled < expected and time.monotonic() < deadline:
            if stop.is_set():
                deadline = min(deadline, time.monotonic() + _STOP_DRAIN_S)
            producer.flush(_ACK_SLICE_S)
            tick()

    def _after_failure(self, acks: _Acks) -> None:
        # Messages still queued would be sent after the retried batch and a fatal error
        # poisons the producer: either way start afresh. Otherwise keep the producer id.
        queued = self._producer is not None and len(self._producer) > 0
        if queued or any(error.fatal() for error in acks.errors):
            self.abandon()

    def abandon(self) -> None:
        """Drop whatever is still queued and the producer with it (the caller rolled its
        batches back, or the producer is spent): none of it may reach Kafka after the rows are
        published again, perhaps by another relay."""
        if self._producer is not None:
            self._producer.purge()
            self._producer.flush(0)
            self._producer = None


def _produce(producer: Producer, topic: str, row: OutboxRow, acks: _Acks) -> None:
    while True:
        try:
            producer.produce(
                topic,
                key=row.key,
                value=row.value,
                headers=row.headers,
                on_delivery=acks.on_delivery,
            )
            return
        except BufferError:
            # The local queue is full: serve delivery reports so it drains, then try again.
            producer.poll(_ACK_SLICE_S)


def _describe(acks: _Acks, expected: int) -> str:
    missing = expected - acks.delivered
    reason = acks.errors[0].str() if acks.errors else "no acknowledgement in time"
    return f"{missing} of {expected} events not acknowledged by Kafka: {reason}"
