"""Request bodies, as the API accepts them, and how their errors read.

Money is an int of minor units and an upper-case ISO 4217 code: JSON floats, booleans and
strings are refused (strict mode), and so are fields nobody asked for.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workers.api.errors import ApiError
from workers.core.money import MAX_AMOUNT, UnknownCurrency, currency_exponent

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500

B = TypeVar("B", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PaymentCreate(_Body):
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: str
    payment_method: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_]+$")
    description: str | None = Field(default=None, max_length=1000)
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, code: str) -> str:
        try:
            currency_exponent(code)
        except UnknownCurrency as exc:
            raise ValueError(str(exc)) from None
        return code

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


class RefundCreate(_Body):
    amount: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    reason: str | None = Field(default=None, max_length=1000)


_CODES = {
    "missing": "parameter_missing",
    "extra_forbidden": "parameter_unknown",
}


def parse_body(model: type[B], raw: bytes) -> B:
    """Validate a JSON body; the first problem becomes a 422 naming its field."""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise _as_api_error(exc) from None


def _as_api_error(exc: ValidationError) -> ApiError:
    error: Any = exc.errors(include_url=False, include_input=False)[0]
    if error["type"] == "json_invalid":
        return ApiError(400, "body_invalid_json", "The request body is not valid JSON")
    if error["type"] == "model_type":
        return ApiError(422, "body_invalid", "The request body must be a JSON object")
    param = ".".join(str(part) for part in error["loc"])
    code = _CODES.get(error["type"], f"{error['loc'][0]}_invalid")
    message = str(error["msg"]).removeprefix("Value error, ")
    return ApiError(422, code, f"{param}: {message}", param=param)
