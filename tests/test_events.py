from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers.kafka import headers_of, read_topic
from workers.core.config import Settings
from workers.core.errors import MalformedEvent, UnknownEventType
from workers.core.events import (
    Event,
    EventType,
    Initiated,
    Succeeded,
    decode,
    encode,
    new_event,
)
from workers.core.kafka import make_producer, produce_sync
from workers.core.topics import topics


def initiated(**overrides: Any) -> Event:
    data = {"amount": 1999, "currency": "USD", "payment_method": "pm_card_visa", **overrides}
    return new_event(
        EventType.INITIATED,
        payment_id="pay_123",
        merchant_id="mer_1",
        data=Initiated(**data),
        source="test",
        correlation_id="corr-1",
    )


def body(event: Event, **changes: Any) -> bytes:
    raw = json.loads(encode(event).value)
    raw.update(changes)
    return json.dumps(raw).encode()


def test_round_trip_keeps_every_field_and_the_typed_payload() -> None:
    event = initiated(metadata={"order": "42"})
    encoded = encode(event)
    decoded = decode(encoded.value, encoded.headers)
    assert decoded == event
    assert decoded.payload(Initiated).amount == 1999
    assert encoded.key == b"pay_123"


def test_headers_follow_the_cloudevents_kafka_binding() -> None:
    event = initiated()
    headers = dict(encode(event).headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == str(event.event_id).encode()
    assert headers["ce_type"] == b"payment.initiated"
    assert headers["ce_subject"] == b"pay_123"
    assert headers["ce_correlationid"] == b"corr-1"
    assert headers["content-type"] == b"application/json"


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\xff garbage", b"[]", b'{"type": "payment.initiated"}', b"null"],
)
def test_garbage_is_malformed(value: bytes) -> None:
    with pytest.raises(MalformedEvent):
        decode(value)


def test_unknown_type_is_its_own_error() -> None:
    with pytest.raises(UnknownEventType, match=r"payment\.teleported"):
        decode(body(initiated(), type="payment.teleported"))


@pytest.mark.parametrize("amount", [19.99, "1999", True, 0, -5, 10**12 + 1])
def test_amount_must_be_a_positive_int_of_minor_units(amount: object) -> None:
    raw = json.loads(encode(initiated()).value)
    raw["data"]["amount"] = amount
    with pytest.raises(MalformedEvent, match="amount"):
        decode(json.dumps(raw).encode())


def test_missing_field_is_malformed() -> None:
    raw = json.loads(encode(initiated()).value)
    del raw["payment_id"]
    with pytest.raises(MalformedEvent, match="payment_id"):
        decode(json.dumps(raw).encode())


def test_payload_of_another_type_is_malformed() -> None:
    with pytest.raises(MalformedEvent):
        decode(body(initiated(), type="payment.succeeded"))


def test_header_type_disagreeing_with_body_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="ce_type"):
        decode(encode(initiated()).value, [("ce_type", b"payment.failed")])


def test_payload_accessor_refuses_the_wrong_kind() -> None:
    with pytest.raises(MalformedEvent):
        initiated().payload(Succeeded)


def test_event_travels_through_kafka_with_key_and_headers(settings: Settings) -> None:
    event = initiated()
    encoded = encode(event)
    topic = topics(settings).payments
    produce_sync(
        make_producer(settings, "operator"),
        topic,
        key=encoded.key,
        value=encoded.value,
        headers=encoded.headers,
    )
    [message] = read_topic(settings, topic, 1)
    assert message.key() == b"pay_123"
    assert headers_of(message)["ce_type"] == "payment.initiated"
    assert decode(message.value(), message.headers()) == event  # type: ignore[arg-type]
