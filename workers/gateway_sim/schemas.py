"""Request bodies and how their errors read: strict JSON (no floats or booleans for ints)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workers.core.money import MAX_AMOUNT, UnknownCurrency, currency_exponent
from workers.gateway_sim.errors import SimError

MAX_KEY_LENGTH = 255
B = TypeVar("B", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChargeCreate(_Body):
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: str
    payment_method: str = Field(min_length=1, max_length=255)
    reference: str = Field(min_length=1, max_length=255)

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, code: str) -> str:
        try:
            currency_exponent(code)
        except UnknownCurrency as exc:
            raise ValueError(str(exc)) from None
        return code


class RefundCreate(_Body):
    charge: str = Field(min_length=1, max_length=255)
    amount: int = Field(ge=1, le=MAX_AMOUNT)


def parse_body(model: type[B], raw: bytes) -> B:
    """A validated body; the first problem becomes a 4xx naming its field."""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise _as_error(exc) from None


def _as_error(exc: ValidationError) -> SimError:
    error: Any = exc.errors(include_url=False, include_input=False)[0]
    if error["type"] == "json_invalid":
        return SimError(400, "body_invalid_json", "The request body is not valid JSON")
    if error["type"] == "model_type":
        return SimError(422, "body_invalid", "The request body must be a JSON object")
    param = ".".join(str(part) for part in error["loc"])
    code = {"missing": "parameter_missing", "extra_forbidden": "parameter_unknown"}.get(
        error["type"], "parameter_invalid"
    )
    return SimError(422, code, f"{param}: {error['msg']}")


def check_key(key: str | None) -> str:
    if key is None:
        raise SimError(400, "idempotency_key_missing", "POST requests need an Idempotency-Key")
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" for c in key):
        raise SimError(
            400,
            "idempotency_key_invalid",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters",
        )
    return key


def fingerprint(path: str, body: BaseModel) -> str:
    """What a key is bound to: the endpoint and the parameters, canonically encoded."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()
