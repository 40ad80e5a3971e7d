"""The one consumer loop every worker uses. Services write handlers, not loops.

For each message: decode, hand to the handler, and act on the outcome as
``workers.core.delivery`` rules (done, retry with backoff, or dead-letter). Offsets are committed
(synchronously) only after every message before them is done, so a crash anywhere redelivers
rather than skips; handlers dedupe by event id. ``workers.core.async_runner`` is the same loop
for handlers that run many messages at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from workers.core.config import KafkaRole, Settings
from workers.core.delivery import (
    DeadLetters,
    Verdicts,
    headers_of,
    offset_of,
    partition_of,
    retry_delays,
    topic_of,
)
from workers.core.errors import TransientError
from workers.core.events import Event, decode
from workers.core.heartbeat import Heartbeat
from workers.core.kafka import (
    Consumer,
    Message,
    TopicPartition,
    commit_offsets,
    consume_ready,
    log_consumer_error,
    make_consumer,
)
from workers.core.metrics import DEAD_LETTER, OK, RETRY, LagProbe, handled
from workers.core.observe import consuming, recorded
from workers.core.topics import topics

log = logging.getLogger(__name__)

Handler = Callable[[Event, Message], None]
# Every event of a poll batch at once, all or nothing (one transaction): one commit per batch.
BatchHandler = Callable[[list[tuple[Event, Message]]], None]


class _Stopped(Exception):
    """Stop was requested while a message was still unfinished: do not commit it."""


class ConsumerRunner:
    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        role: KafkaRole,
        handler: Handler,
        subscribe_to: list[str] | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        self.settings = settings
        self.group = group
        self.role = role
        self.handler = handler
        self.batch_handler = batch_handler
        self.subscribe_to = subscribe_to or [topics(settings).payments]
        self.dead_letters = DeadLetters(settings, group, role)

    def run(self, stop: threading.Event) -> None:
        consumer = make_consumer(self.settings, self.group, self.role)
        consumer.subscribe(self.subscribe_to)
        heartbeat = Heartbeat(self.role)
        lag = LagProbe(self.group)
        log.info("%s consuming %s as group %s", self.role, self.subscribe_to, self.group)
        try:
            while not stop.is_set():
                heartbeat.beat()
                batch = consume_ready(
                    consumer, self.settings.worker.batch_size, self.settings.worker.poll_timeout_s
                )
                self._handle_batch(consumer, batch, stop)
                lag.observe(consumer)
        finally:
            consumer.close()
            self.dead_letters.close()

    def _handle_batch(
        self, consumer: Consumer, batch: list[Message], stop: threading.Event
    ) -> None:
        done: dict[tuple[str, int], int] = {}
        try:
            if not stop.is_set() and self._all_at_once(batch, done):
                return
            for message in batch:
                if stop.is_set():
                    break  # the rest was never started: it will be redelivered
                error = message.error()
                if error is not None:
                    log_consumer_error(self.role, error)
                    continue
                with consuming(self.role, message):
                    self._process(message, stop)
                done[(topic_of(message), partition_of(message))] = offset_of(message) + 1
        except _Stopped:
            log.info("%s stopping with a message unfinished; it will be redelivered", self.role)
        finally:
            if done:
                offsets = [TopicPartition(t, p, o) for (t, p), o in done.items()]
                commit_offsets(consumer, offsets, role=self.role)

    def _all_at_once(self, batch: list[Message], done: dict[tuple[str, int], int]) -> bool:
        """The batch handler on the whole batch; False leaves it to the message-by-message path.

        That path has the retries and dead letters: a batch that will not decode or fails is
        taken again there, which is safe because the batch handler did all of it or nothing.
        """
        if self.batch_handler is None or len(batch) < 2:
            return False
        try:
            if any(m.error() is not None for m in batch):
                return False
            events = [(decode(m.value(), headers_of(m)), m) for m in batch]
            started_ns, started = time.time_ns(), time.perf_counter()
            self.batch_handler(events)
        except Exception as exc:
            log.info("%s: batch of %d not taken at once (%r)", self.role, len(batch), exc)
            return False
        for message in batch:  # outcomes count messages, as on the message-by-message path
            handled(self.group, OK, started)
            done[(topic_of(message), partition_of(message))] = offset_of(message) + 1
        recorded(self.role, [headers_of(m) for m in batch], started_ns)
        return True

    def _process(self, message: Message, stop: threading.Event) -> None:
        verdicts = Verdicts(self.settings.worker.max_attempts)
        for delay in retry_delays(self.settings.worker.retry_max_backoff_s):
            started = time.perf_counter()
            try:
                self.handler(decode(message.value(), headers_of(message)), message)
                handled(self.group, OK, started)
                return
            except Exception as exc:
                log.warning("%s: handler failed (%r); deciding", self.role, exc)
                if verdicts.dead_letter(exc) and self._dead_letter(message, exc):
                    handled(self.group, DEAD_LETTER, started)
                    return
                handled(self.group, RETRY, started)
            if stop.wait(delay):
                raise _Stopped

    def _dead_letter(self, message: Message, exc: BaseException) -> bool:
        try:
            self.dead_letters.send(message, exc)
        except TransientError as unreachable:
            log.warning("%s: dead-letter topic unreachable: %s", self.role, unreachable)
            return False
        return True
