"""The event contract: one envelope, one typed payload per event type, one codec.

On Kafka an event is the CloudEvents Kafka binding in binary mode: the attributes travel as
``ce_*`` headers, and the value is JSON. FlowPay's value carries the whole envelope too, so a
message is self-describing when replayed or dead-lettered; the key is the payment id.
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    StrictInt,
    ValidationError,
    model_validator,
)

from workers.core.errors import MalformedEvent, UnknownEventType
from workers.core.money import MAX_AMOUNT
from workers.core.status import CancellationReason

SCHEMA_VERSION: Final = 1
CONTENT_TYPE: Final = "application/json"

Amount = StrictInt


class EventType(StrEnum):
    # A payment created with automatic capture (one gateway charge), as it always was.
    INITIATED = "payment.initiated"
    # A payment created with manual capture: authorize now, capture or cancel later.
    AUTHORIZATION_REQUESTED = "payment.authorization_requested"
    PROCESSING = "payment.processing"
    REQUIRES_CAPTURE = "payment.requires_capture"
    # The customer must act (3-D Secure) before the gateway can settle the payment.
    REQUIRES_ACTION = "payment.requires_action"
    CAPTURE_REQUESTED = "payment.capture_requested"
    CANCEL_REQUESTED = "payment.cancel_requested"
    SUCCEEDED = "payment.succeeded"
    FAILED = "payment.failed"
    CANCELED = "payment.canceled"
    REFUND_REQUESTED = "payment.refund_requested"
    REFUNDED = "payment.refunded"
    REFUND_FAILED = "payment.refund_failed"
    CHARGE_REVERSED = "payment.charge_reversed"
    # A gateway's own word on an outcome that came later (a verified Stripe webhook), keyed by
    # the FlowPay payment (or payout) it names: for the processor to settle by.
    GATEWAY_REPORTED = "gateway.reported"
    # A merchant's payout of its balance (the envelope's ``payment_id`` is the payout's id: a
    # payout's events are ordered in one partition as a payment's are).
    PAYOUT_REQUESTED = "payout.requested"
    PAYOUT_PAID = "payout.paid"
    PAYOUT_FAILED = "payout.failed"


class EventData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Initiated(EventData):
    amount: Amount = Field(gt=0, le=MAX_AMOUNT)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(min_length=1, max_length=255)
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class Processing(EventData):
    pass


class Succeeded(EventData):
    charge_id: str = Field(min_length=1)
    # A manual capture's amount (at most the authorized amount; the rest is released). None:
    # the whole amount, as every automatic charge.
    amount_captured: Amount | None = Field(default=None, gt=0, le=MAX_AMOUNT)


_GATEWAY_ID = r"^[A-Za-z0-9_]{1,255}$"
_GATEWAY_WORD = r"^[a-z0-9_]{1,64}$"


class RedirectToUrl(EventData):
    url: str = Field(pattern=r"^https://", max_length=2048)


class RequiresCapture(EventData):
    """The gateway holds ``amount_capturable`` on the card until a capture, a void or expiry."""

    authorization_id: str = Field(min_length=1, max_length=255)
    amount_capturable: Amount = Field(gt=0, le=MAX_AMOUNT)


class NextAction(EventData):
    """What the customer must do, in Stripe's shape: its type and, for a redirect, where to.

    Only these are kept: a ``use_stripe_sdk`` action's data is for Stripe.js and carries the
    intent's client secret."""

    type: str = Field(pattern=_GATEWAY_WORD)
    redirect_to_url: RedirectToUrl | None = None


class RequiresAction(EventData):
    """The gateway holds the payment until the customer acts (``charge_id``: its id there)."""

    charge_id: str = Field(pattern=_GATEWAY_ID)
    next_action: NextAction


class CaptureRequested(EventData):
    amount_to_capture: Amount = Field(gt=0, le=MAX_AMOUNT)


class CancelRequested(EventData):
    cancellation_reason: CancellationReason


class Canceled(EventData):
    """The authorization was voided at the gateway (asked for, or expired)."""

    cancellation_reason: CancellationReason


# Why a payment failed. The card's reasons are those a gateway reports (a decline code the
# list does not name is card_declined); the last three are FlowPay's own.
FailureReason = Literal[
    "card_declined",
    "insufficient_funds",
    "expired_card",
    "incorrect_cvc",
    "incorrect_number",
    "invalid_expiry",
    "processing_error",
    "authentication_failed",
    # The customer did not complete the action asked of them (3-D Secure) in time.
    "action_expired",
    "gateway_timeout",
    "gateway_error",
]


class Failed(EventData):
    reason: FailureReason


class RefundRequested(EventData):
    refund_id: str = Field(min_length=1)
    amount: Amount = Field(gt=0, le=MAX_AMOUNT)
    reason: str | None = None


class Refunded(EventData):
    refund_id: str = Field(min_length=1)
    amount: Amount = Field(gt=0, le=MAX_AMOUNT)
    refunded_total: Amount = Field(gt=0, le=MAX_AMOUNT)


class RefundFailed(EventData):
    refund_id: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class ChargeReversed(EventData):
    charge_id: str = Field(min_length=1)
    amount: Amount = Field(gt=0, le=MAX_AMOUNT)


# What a gateway reports, bounded and checked as it comes in (workers.api.stripe_webhooks).
GatewayEventType = Literal[
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    # A manual payment's authorization completed (3-D Secure): it can be captured now.
    "payment_intent.amount_capturable_updated",
    "charge.refunded",
    "payout.paid",
    "payout.failed",
]


class GatewayReported(EventData):
    provider: Literal["stripe"]
    gateway_event_id: str = Field(pattern=_GATEWAY_ID)
    gateway_event_type: GatewayEventType
    object_id: str = Field(pattern=_GATEWAY_ID)  # pi_..., ch_..., po_...
    status: str = Field(pattern=_GATEWAY_WORD)
    # The object's amount that the event is about: received, refunded in all, paid out.
    amount: Amount | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    failure_reason: str | None = Field(default=None, pattern=_GATEWAY_WORD)
    livemode: bool


class PayoutRequested(EventData):
    """The API reserved ``amount`` of the merchant's available balance for this payout."""

    amount: Amount = Field(gt=0, le=MAX_AMOUNT)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    # The bank account paid into, as the gateway names it (Stripe's ``destination``); None: the
    # merchant's default one.
    destination: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")


class PayoutPaid(EventData):
    gateway_payout_id: str = Field(min_length=1, max_length=255)
    amount: Amount = Field(gt=0, le=MAX_AMOUNT)


# Why a payout failed: the gateway refused it, or could not be reached in time.
PayoutFailureReason = Literal["payout_refused", "gateway_error"]


class PayoutFailed(EventData):
    reason: PayoutFailureReason


PAYLOADS: Final[dict[EventType, type[EventData]]] = {
    EventType.INITIATED: Initiated,
    EventType.AUTHORIZATION_REQUESTED: Initiated,
    EventType.PROCESSING: Processing,
    EventType.REQUIRES_CAPTURE: RequiresCapture,
    EventType.REQUIRES_ACTION: RequiresAction,
    EventType.CAPTURE_REQUESTED: CaptureRequested,
    EventType.CANCEL_REQUESTED: CancelRequested,
    EventType.SUCCEEDED: Succeeded,
    EventType.FAILED: Failed,
    EventType.CANCELED: Canceled,
    EventType.REFUND_REQUESTED: RefundRequested,
    EventType.REFUNDED: Refunded,
    EventType.REFUND_FAILED: RefundFailed,
    EventType.CHARGE_REVERSED: ChargeReversed,
    EventType.GATEWAY_REPORTED: GatewayReported,
    EventType.PAYOUT_REQUESTED: PayoutRequested,
    EventType.PAYOUT_PAID: PayoutPaid,
    EventType.PAYOUT_FAILED: PayoutFailed,
}

D = TypeVar("D", bound=EventData)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    type: EventType
    payment_id: str = Field(min_length=1, max_length=255)
    merchant_id: str = Field(min_length=1, max_length=255)
    occurred_at: datetime
    schema_version: int = Field(ge=1, le=SCHEMA_VERSION)
    correlation_id: str = Field(min_length=1, max_length=255)
    source: str = Field(min_length=1)
    data: SerializeAsAny[EventData]

    @model_validator(mode="before")
    @classmethod
    def _typed_payload(cls, values: Any) -> Any:
        if isinstance(values, dict) and isinstance(values.get("data"), dict):
            payload = _payload_for(values.get("type"))
            if payload is not None:
                values = {**values, "data": payload.model_validate(values["data"])}
        return values

    @model_validator(mode="after")
    def _payload_matches_type(self) -> Event:
        if type(self.data) is not PAYLOADS[self.type]:
            raise ValueError(f"data of a {self.type} event must be {PAYLOADS[self.type].__name__}")
        return self

    def payload(self, kind: builtins.type[D]) -> D:
        """The payload as ``kind``; raises MalformedEvent if it is another kind."""
        if not isinstance(self.data, kind):
            raise MalformedEvent(f"{self.type} does not carry {kind.__name__}")
        return self.data


# The two events that create a payment (both carry ``Initiated``): automatic, manual capture.
CREATED: Final = frozenset({EventType.INITIATED, EventType.AUTHORIZATION_REQUESTED})
# A payout's events: its subject is a payout, not a payment.
PAYOUT_EVENTS: Final = frozenset(
    {EventType.PAYOUT_REQUESTED, EventType.PAYOUT_PAID, EventType.PAYOUT_FAILED}
)

# By the type's name: what EventType(str(name)) would find, without building the enum member
# (a decode's before-validator asks this for every event).
_PAYLOADS_BY_NAME: Final[dict[str, type[EventData]]] = {t.value: p for t, p in PAYLOADS.items()}


def _payload_for(type_name: object) -> builtins.type[EventData] | None:
    return _PAYLOADS_BY_NAME.get(str(type_name))


def new_event(
    type_: EventType,
    *,
    payment_id: str,
    merchant_id: str,
    data: EventData,
    source: str,
    correlation_id: str | None = None,
) -> Event:
    return Event(
        event_id=uuid.uuid4(),
        type=type_,
        payment_id=payment_id,
        merchant_id=merchant_id,
        occurred_at=datetime.now(UTC),
        schema_version=SCHEMA_VERSION,
        correlation_id=correlation_id or str(uuid.uuid4()),
        source=source,
        data=data,
    )


# As confluent-kafka types them; FlowPay itself always writes bytes.
Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class Encoded:
    key: bytes
    value: bytes
    headers: Headers


def cloudevent_headers(
    id_: str, source: str, type_: str, subject: str, time: datetime, extra: Headers
) -> Headers:
    """The CloudEvents Kafka binding's headers (binary mode), FlowPay's extensions after them."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", id_.encode()),
        ("ce_source", source.encode()),
        ("ce_type", type_.encode()),
        ("ce_subject", subject.encode()),
        ("ce_time", time.isoformat().encode()),
        *extra,
        ("content-type", CONTENT_TYPE.encode()),
    ]


def encode(event: Event) -> Encoded:
    headers = cloudevent_headers(
        str(event.event_id),
        event.source,
        event.type.value,
        event.payment_id,
        event.occurred_at,
        [
            ("ce_merchantid", event.merchant_id.encode()),
            ("ce_correlationid", event.correlation_id.encode()),
            ("ce_schemaversion", str(event.schema_version).encode()),
        ],
    )
    return Encoded(event.payment_id.encode(), event.model_dump_json().encode(), headers)


def header(headers: Headers | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


def decode(value: bytes | None, headers: Headers | None = None) -> Event:
    """Parse one Kafka message; raises MalformedEvent or UnknownEventType, never anything else."""
    return decode_envelope(Event, value, headers, MalformedEvent, UnknownEventType, "event")


M = TypeVar("M", bound=BaseModel)


def decode_envelope(
    model: builtins.type[M],
    value: bytes | None,
    headers: Headers | None,
    malformed: builtins.type[MalformedEvent],
    unknown: builtins.type[UnknownEventType],
    what: str,
) -> M:
    """One message's envelope as ``model`` (whose ``type`` field the ``ce_type`` header must
    match); raises ``malformed`` or ``unknown``, never anything else."""
    if not value:
        raise malformed("empty message value")
    try:
        parsed = model.model_validate_json(value)
    except ValidationError as exc:
        raise _classify(exc, malformed, unknown, what) from None
    declared = header(headers, "ce_type")
    kind = str(getattr(parsed, "type", ""))
    if declared is not None and declared != kind:
        raise malformed(f"header ce_type {declared!r} disagrees with body type {kind}")
    return parsed


def _classify(
    exc: ValidationError,
    malformed: builtins.type[MalformedEvent],
    unknown: builtins.type[UnknownEventType],
    what: str,
) -> MalformedEvent | UnknownEventType:
    for error in exc.errors(include_url=False):
        if error["loc"] == ("type",) and error["type"] == "enum":
            return unknown(f"unknown {what} type {error.get('input')!r}")
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return malformed(f"{where}: {first['msg']}")
