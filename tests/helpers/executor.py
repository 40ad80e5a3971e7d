"""A command executor for tests: it plays the service that will execute the orchestrator's
commands (the processor, once it moves onto them), with real Kafka clients.

It consumes ``<prefix>.commands``, dedupes by command id (a redelivery is answered by nothing
new), and answers each command with an event on the payment event log, as ``ANSWERS`` allows:
what ``answer`` decides (by default, success). Every command it took is kept for assertions.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from workers.core import commands
from workers.core.commands import Authorize, Capture, Charge, Command, CommandType, Refund, Void
from workers.core.config import Settings
from workers.core.events import (
    Canceled,
    Event,
    EventData,
    EventType,
    Refunded,
    RequiresCapture,
    Succeeded,
    new_event,
)
from workers.core.kafka import make_consumer, make_producer
from workers.core.topics import topics

Answer = Callable[[Command], tuple[EventType, EventData] | None]


def succeed(command: Command) -> tuple[EventType, EventData] | None:
    """Every command done as asked."""
    data = command.data
    if isinstance(data, Authorize):
        hold = RequiresCapture(
            authorization_id=f"auth_{command.subject}", amount_capturable=data.amount
        )
        return EventType.REQUIRES_CAPTURE, hold
    if isinstance(data, Charge):
        return EventType.SUCCEEDED, Succeeded(charge_id=f"ch_{command.subject}")
    if isinstance(data, Capture):
        captured = Succeeded(
            charge_id=f"ch_{command.subject}", amount_captured=data.amount_to_capture
        )
        return EventType.SUCCEEDED, captured
    if isinstance(data, Void):
        return EventType.CANCELED, Canceled(cancellation_reason=data.cancellation_reason)
    if isinstance(data, Refund):
        done = Refunded(refund_id=data.refund_id, amount=data.amount, refunded_total=data.amount)
        return EventType.REFUNDED, done
    raise AssertionError(f"no answer for {command.type}")


class Executor:
    def __init__(self, settings: Settings, answer: Answer = succeed) -> None:
        self.settings = settings
        self.answer = answer
        self.taken: list[Command] = []
        self.redelivered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-executor", daemon=True)

    def of(self, payment_id: str, type_: CommandType | None = None) -> list[Command]:
        with self._lock:
            return [c for c in self.taken if c.subject == payment_id and type_ in (None, c.type)]

    def _run(self) -> None:
        names = topics(self.settings)
        consumer = make_consumer(self.settings, f"executor-{uuid.uuid4().hex}", "processor")
        producer = make_producer(self.settings, "processor")
        consumer.subscribe([names.commands])
        seen: set[uuid.UUID] = set()
        try:
            while not self._stop.is_set():
                for message in consumer.consume(100, 0.1):
                    if message.error() is not None:
                        continue
                    command = commands.decode(message.value(), message.headers())
                    with self._lock:
                        if command.command_id in seen:
                            self.redelivered += 1
                            continue
                        seen.add(command.command_id)
                        self.taken.append(command)
                    reply = self.answer(command)
                    if reply is not None:
                        self._publish(producer, names.payments, _event(command, *reply))
        finally:
            consumer.close()

    @staticmethod
    def _publish(producer: object, topic: str, event: Event) -> None:
        from workers.core.events import encode

        encoded = encode(event)
        producer.produce(topic, key=encoded.key, value=encoded.value, headers=encoded.headers)  # type: ignore[attr-defined]
        assert producer.flush(30) == 0  # type: ignore[attr-defined]

    @contextmanager
    def running(self) -> Iterator[Executor]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(30)


def _event(command: Command, type_: EventType, data: EventData) -> Event:
    return new_event(
        type_,
        payment_id=command.subject,
        merchant_id=command.merchant_id,
        data=data,
        source="test/executor",
        correlation_id=command.correlation_id,
    )
