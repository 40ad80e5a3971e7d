"""Request bodies, as the API accepts them, and how their errors read.

Money is an integer of minor units and an upper-case ISO 4217 code. An amount is a JSON number
with no fraction, as JSON Schema's ``integer`` says (``548`` and ``548.0`` are the same amount);
a fraction, a boolean or a string is refused (strict mode), and so are fields nobody asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, field_validator

from workers.core.money import MAX_AMOUNT, CurrencyCode, currency_codes
from workers.core.requests import StrictBody
from workers.core.requests import parse_body as parse_json

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


class RefundCreate(StrictBody):
    """Without an amount, what is left of the payment is refunded."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"amount": 500, "reason": "requested_by_customer"}]}
    )

    amount: MinorUnits | None = None
    reason: str | None = Field(default=None, max_length=1000)


def parse_body(model: type[B], raw: bytes) -> B:
    """Validate a JSON body; an invalid field's code is ``<field>_invalid``."""
    return parse_json(model, raw, lambda field: f"{field}_invalid")
