"""The command contract: what the saga orchestrator asks a service to do, and what answers it.

Commands go to ``<prefix>.commands`` (through ``orchestrator.outbox`` and the relay), keyed by
their saga's subject (the payment id), so that the commands of one payment are in order in one
partition. On Kafka a command is the CloudEvents Kafka binding in binary mode, as events are:
``ce_*`` headers (``ce_sagaid`` among them) and the whole envelope as the JSON value. Its types
are its own enum: a command is never mistaken for an event, nor decoded as one.

An executing service answers a command with events on the payment event log (``ANSWERS`` says
which); it dedupes by ``command_id``, and a command whose effect it already produced (a resend
after a timeout, ``attempt`` > 1) is answered again with the same outcome, never done twice: its
gateway calls carry idempotency keys derived from the payment (or refund), not the command.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, model_validator

from workers.core.errors import MalformedCommand, UnknownCommandType
from workers.core.events import (
    Amount,
    Encoded,
    EventType,
    Headers,
    cloudevent_headers,
    decode_envelope,
)
from workers.core.money import MAX_AMOUNT
from workers.core.status import CancellationReason

SCHEMA_VERSION: Final = 1


class CommandType(StrEnum):
    CHARGE = "payment.charge"  # authorize and capture in one gateway charge (automatic)
    AUTHORIZE = "payment.authorize"  # hold the amount on the card (manual capture)
    CAPTURE = "payment.capture"  # take (part of) what is held; the rest is released
    VOID = "payment.void"  # release what is held
    REFUND = "payment.refund"  # give (part of) a captured payment back
    PAYOUT = "payout.send"  # pay a merchant's reserved balance out through the gateway


class CommandData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Charge(CommandData):
    amount: Amount = Field(gt=0, le=MAX_AMOUNT)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(min_length=1, max_length=255)


class Authorize(Charge):
    pass


class Capture(CommandData):
    amount_to_capture: Amount = Field(gt=0, le=MAX_AMOUNT)


class Void(CommandData):
    cancellation_reason: CancellationReason


class Refund(CommandData):
    refund_id: str = Field(min_length=1, max_length=255)
    amount: Amount = Field(gt=0, le=MAX_AMOUNT)


class Payout(CommandData):
    amount: Amount = Field(gt=0, le=MAX_AMOUNT)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    destination: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")


PAYLOADS: Final[dict[CommandType, type[CommandData]]] = {
    CommandType.CHARGE: Charge,
    CommandType.AUTHORIZE: Authorize,
    CommandType.CAPTURE: Capture,
    CommandType.VOID: Void,
    CommandType.REFUND: Refund,
    CommandType.PAYOUT: Payout,
}

# The events that answer each command: the executing service emits one of them (an unknown
# outcome is its own to resolve, as the processor does for charges today, before it answers).
ANSWERS: Final[dict[CommandType, frozenset[EventType]]] = {
    CommandType.CHARGE: frozenset({EventType.SUCCEEDED, EventType.FAILED}),
    CommandType.AUTHORIZE: frozenset({EventType.REQUIRES_CAPTURE, EventType.FAILED}),
    CommandType.CAPTURE: frozenset({EventType.SUCCEEDED, EventType.FAILED}),
    CommandType.VOID: frozenset({EventType.CANCELED}),
    CommandType.REFUND: frozenset({EventType.REFUNDED, EventType.REFUND_FAILED}),
    CommandType.PAYOUT: frozenset({EventType.PAYOUT_PAID, EventType.PAYOUT_FAILED}),
}


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: uuid.UUID
    type: CommandType
    saga_id: str = Field(min_length=1, max_length=255)
    subject: str = Field(min_length=1, max_length=255)  # the payment (or payout) id
    merchant_id: str = Field(min_length=1, max_length=255)
    issued_at: datetime
    schema_version: int = Field(ge=1, le=SCHEMA_VERSION)
    correlation_id: str = Field(min_length=1, max_length=255)
    source: str = Field(min_length=1)
    # 1, then one more each time a step's timeout sends its command again.
    attempt: int = Field(ge=1)
    data: SerializeAsAny[CommandData]

    @model_validator(mode="before")
    @classmethod
    def _typed_payload(cls, values: Any) -> Any:
        if isinstance(values, dict) and isinstance(values.get("data"), dict):
            payload = _PAYLOADS_BY_NAME.get(str(values.get("type")))
            if payload is not None:
                values = {**values, "data": payload.model_validate(values["data"])}
        return values

    @model_validator(mode="after")
    def _payload_matches_type(self) -> Command:
        if type(self.data) is not PAYLOADS[self.type]:
            wanted = PAYLOADS[self.type].__name__
            raise ValueError(f"data of a {self.type} command must be {wanted}")
        return self


_PAYLOADS_BY_NAME: Final = {t.value: p for t, p in PAYLOADS.items()}


def new_command(
    type_: CommandType,
    *,
    command_id: uuid.UUID,
    saga_id: str,
    subject: str,
    merchant_id: str,
    data: CommandData,
    correlation_id: str,
    attempt: int = 1,
    source: str = "flowpay/orchestrator",
    issued_at: datetime | None = None,
) -> Command:
    return Command(
        command_id=command_id,
        type=type_,
        saga_id=saga_id,
        subject=subject,
        merchant_id=merchant_id,
        issued_at=issued_at or datetime.now(UTC),
        schema_version=SCHEMA_VERSION,
        correlation_id=correlation_id,
        source=source,
        attempt=attempt,
        data=data,
    )


def encode(command: Command) -> Encoded:
    headers = cloudevent_headers(
        str(command.command_id),
        command.source,
        command.type.value,
        command.subject,
        command.issued_at,
        [
            ("ce_merchantid", command.merchant_id.encode()),
            ("ce_correlationid", command.correlation_id.encode()),
            ("ce_sagaid", command.saga_id.encode()),
            ("ce_schemaversion", str(command.schema_version).encode()),
        ],
    )
    return Encoded(command.subject.encode(), command.model_dump_json().encode(), headers)


def decode(value: bytes | None, headers: Headers | None = None) -> Command:
    """Parse one message of the command topic; raises MalformedCommand or UnknownCommandType."""
    return decode_envelope(Command, value, headers, MalformedCommand, UnknownCommandType, "command")
