"""Request bodies, as the API accepts them, and how their errors read.

Money is an integer of minor units and an upper-case ISO 4217 code. An amount is a JSON number
with no fraction, as JSON Schema's ``integer`` says (``548`` and ``548.0`` are the same amount);
a fraction, a boolean or a string is refused (strict mode), and so are fields nobody asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, field_validator

from workers.core.money import MAX_AMOUNT, CurrencyCode, currency_codes
from workers.core.requests import StrictBody
from workers.core.requests import parse_body as parse_json
from workers.core.status import CancellationReason, CaptureMethod

# Literal rather than the enums: the document shows a plain string enum, with no $defs.
CaptureMethodName = Literal["automatic", "manual"]
# The reasons a merchant may give (``expired`` is FlowPay's own), as Stripe's.
MerchantCancellationReason = Literal[
    "duplicate", "fraudulent", "requested_by_customer", "abandoned"
]

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500

B = TypeVar("B", bound=BaseModel)


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (``548.0``) as the integer it is; anything else as sent."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# An integer, whether written 548 or 548.0 (strict mode refuses 548.5 and "548"). Bounds go in
# the same Annotated (nested in another, pydantic would write them as "ge"/"le" in the schema).
WholeNumber = Annotated[int, BeforeValidator(_integral)]
# Minor units.
MinorUnits = Annotated[int, Field(ge=1, le=MAX_AMOUNT), BeforeValidator(_integral)]


class PaymentCreate(StrictBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "amount": 1999,
                    "currency": "USD",
                    "payment_method": "pm_card_visa",
                    "description": "Order 1042",
                    "metadata": {"order_id": "1042"},
                }
            ]
        }
    )

    amount: MinorUnits
    currency: CurrencyCode = Field(json_schema_extra={"enum": list[JsonValue](currency_codes())})
    payment_method: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_]+$")
    description: str | None = Field(default=None, max_length=1000)
    metadata: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY},
            "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE},
        },
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, metadata: dict[str, str]) -> dict[str, str]:
        if len(metadata) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
        for key, value in metadata.items():
            if not 1 <= len(key) <= MAX_METADATA_KEY:
                raise ValueError(f"keys must be 1 to {MAX_METADATA_KEY} characters")
            if len(value) > MAX_METADATA_VALUE:
                raise ValueError(f"values must be at most {MAX_METADATA_VALUE} characters")
        return metadata

    capture_method: CaptureMethodName = Field(
        default="automatic",
        description="`automatic`: charged at once. `manual`: authorized only; the payment stops "
        "at `requires_capture` until captured (`POST .../capture`) or canceled (`POST "
        ".../cancel`), and is canceled if not captured within 7 days.",
    )

    def canonical(self) -> dict[str, Any]:
        """The request as its Idempotency-Key is bound to it. The default capture method is
        left out, so that a request from before manual capture keeps its fingerprint."""
        fields = self.model_dump(mode="json")
        if self.capture_method == CaptureMethod.AUTOMATIC.value:
            del fields["capture_method"]
        return fields


class CaptureCreate(StrictBody):
    """Without ``amount_to_capture``, everything the authorization holds is captured."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"amount_to_capture": 1500}]})

    amount_to_capture: MinorUnits | None = Field(
        default=None,
        description="At most the amount authorized; what is not captured is released",
    )


class CancelCreate(StrictBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"cancellation_reason": "requested_by_customer"}]}
    )

    cancellation_reason: MerchantCancellationReason | None = None

    def reason(self) -> CancellationReason:
        """The reason given, else ``requested_by_customer``."""
        return CancellationReason(self.cancellation_reason or "requested_by_customer")


class RefundCreate(StrictBody):
    """Without an amount, what is left of the payment is refunded."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"amount": 500, "reason": "requested_by_customer"}]}
    )

    amount: MinorUnits | None = None
    reason: str | None = Field(default=None, max_length=1000)


class PayoutCreate(StrictBody):
    """A payout of (part of) the available balance in ``currency`` to a bank account."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"amount": 5000, "currency": "EUR"}]})

    amount: MinorUnits
    currency: CurrencyCode = Field(json_schema_extra={"enum": list[JsonValue](currency_codes())})
    # The bank account paid into, as the gateway names it; without it, the default one.
    destination: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")


def parse_body(model: type[B], raw: bytes) -> B:
    """Validate a JSON body; an invalid field's code is ``<field>_invalid``."""
    return parse_json(model, raw, lambda field: f"{field}_invalid")
