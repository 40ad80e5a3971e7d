"""Real FlowPay events in bulk, and producing many of them quickly."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

from workers.core import commands
from workers.core.events import (
    Encoded,
    Event,
    EventType,
    Initiated,
    Processing,
    Succeeded,
    encode,
    new_event,
)
from workers.core.kafka import Producer

MERCHANT = "mer_bench"
SOURCE = "flowpay/bench"
# Well under librdkafka's local queue (queue.buffering.max.messages, 100,000): never full.
_QUEUE_SLICE = 50_000


def payment_id(n: int) -> str:
    return f"pay_bench{n:08d}{uuid.uuid4().hex[:8]}"


def initiated(payment: str, n: int = 0) -> Event:
    data = Initiated(amount=1000 + n % 9000, currency="USD", payment_method="pm_card_visa")
    return new_event(
        EventType.INITIATED, payment_id=payment, merchant_id=MERCHANT, data=data, source=SOURCE
    )


def initiated_many(count: int) -> list[Event]:
    return [initiated(payment_id(n), n) for n in range(count)]


def charge_commands(count: int) -> list[Encoded]:
    """The orchestrator's charge command for each of ``count`` new payments, encoded."""
    encoded = []
    for n, event in enumerate(initiated_many(count)):
        data = event.payload(Initiated)
        command = commands.new_command(
            commands.CommandType.CHARGE,
            command_id=uuid.uuid4(),
            saga_id=f"saga_{event.payment_id}",
            subject=event.payment_id,
            merchant_id=MERCHANT,
            data=commands.Charge(
                amount=data.amount, currency=data.currency, payment_method=data.payment_method
            ),
            correlation_id=f"corr_bench{n}",
            source=SOURCE,
        )
        encoded.append(commands.encode(command))
    return encoded


def lifecycles(count: int) -> Iterator[Event]:
    """Each payment's events as the processor emits them: initiated, processing, succeeded."""
    for n in range(count):
        payment = payment_id(n)
        yield initiated(payment, n)
        for type_, data in (
            (EventType.PROCESSING, Processing()),
            (EventType.SUCCEEDED, Succeeded(charge_id=f"ch_{payment}")),
        ):
            yield new_event(
                type_, payment_id=payment, merchant_id=MERCHANT, data=data, source=SOURCE
            )


def produce_all(producer: Producer, topic: str, messages: Iterable[Encoded]) -> int:
    """Produce every message and wait for every acknowledgement; returns how many failed."""
    failed = 0

    def on_delivery(error: object, _message: object) -> None:
        nonlocal failed
        failed += error is not None

    for n, message in enumerate(messages, 1):
        producer.produce(
            topic,
            key=message.key,
            value=message.value,
            headers=message.headers,
            on_delivery=on_delivery,
        )
        producer.poll(0)
        if n % _QUEUE_SLICE == 0:
            producer.flush(300)
    producer.flush(300)
    return failed


def encode_all(events: Iterable[Event]) -> list[Encoded]:
    return [encode(e) for e in events]
