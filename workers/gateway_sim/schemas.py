"""Request bodies and how their errors read: strict JSON (no floats or booleans for ints)."""

from __future__ import annotations

import hashlib
import json
from typing import TypeVar

from pydantic import BaseModel, Field

from workers.core.money import MAX_AMOUNT, CurrencyCode
from workers.core.requests import BadRequest, StrictBody, check_idempotency_key
from workers.core.requests import parse_body as parse_json
from workers.gateway_sim.errors import SimError

B = TypeVar("B", bound=BaseModel)


class ChargeCreate(StrictBody):
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: CurrencyCode
    payment_method: str = Field(min_length=1, max_length=255)
    reference: str = Field(min_length=1, max_length=255)


class AuthorizationCreate(ChargeCreate):
    pass


class CaptureCreate(StrictBody):
    # Without it, all that is held is captured.
    amount_to_capture: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)


class VoidCreate(StrictBody):
    pass


class PayoutCreate(StrictBody):
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: CurrencyCode
    # The bank account paid into (a test one fails: workers.gateway_sim.payouts).
    destination: str = Field(default="ba_default", min_length=1, max_length=255)
    # The caller's own id for the payout, to look it up by later.
    reference: str = Field(min_length=1, max_length=255)


class RefundCreate(StrictBody):
    charge: str = Field(min_length=1, max_length=255)
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    # The caller's own id for the refund (as Stripe's metadata), to look it up by later.
    reference: str | None = Field(default=None, min_length=1, max_length=255)


def parse_body(model: type[B], raw: bytes) -> B:
    """A validated body; an invalid field's code is ``parameter_invalid``."""
    try:
        return parse_json(model, raw, lambda _field: "parameter_invalid")
    except BadRequest as exc:
        raise SimError(exc.status, exc.code, exc.message) from None


def check_key(key: str | None) -> str:
    try:
        return check_idempotency_key(key)
    except BadRequest as exc:
        raise SimError(exc.status, exc.code, exc.message) from None


def fingerprint(path: str, body: BaseModel) -> str:
    """What a key is bound to: the endpoint and the parameters, canonically encoded.

    Parameters left out are not encoded, so a key keeps its fingerprint when an optional
    parameter is added to its endpoint."""
    params = body.model_dump(mode="json", exclude_none=True)
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()
