"""The OpenAPI schemas of ``/v1/payouts`` and ``/v1/balance``: what their answers look like."""

from __future__ import annotations

from typing import Any, Final

PAYOUT_ID_PATTERN: Final = "^po_[0-9A-HJKMNP-TV-Z]{26}$"
_MOMENT: Final = {"type": "string", "format": "date-time"}
_AMOUNT: Final = {"type": "integer", "minimum": 1, "description": "In minor units"}
PAYOUT_EXAMPLE: Final[dict[str, Any]] = {
    "id": "po_01JBZ3N6Q8X5V7T9R2M4K6H8F0",
    "object": "payout",
    "amount": 5000,
    "currency": "EUR",
    "destination": None,
    "status": "pending",
    "failure_reason": None,
    "created_at": "2025-01-15T09:30:00.000000Z",
    "updated_at": "2025-01-15T09:30:00.000000Z",
}
PAYOUT: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A payout of the merchant's balance: pending until the gateway paid it or "
    "it failed (its amount then available again).",
    "required": list(PAYOUT_EXAMPLE),
    "properties": {
        "id": {"type": "string", "pattern": PAYOUT_ID_PATTERN},
        "object": {"type": "string", "enum": ["payout"]},
        "amount": _AMOUNT,
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "destination": {"type": ["string", "null"], "description": "The bank account paid into"},
        "status": {"type": "string", "enum": ["pending", "paid", "failed"]},
        "failure_reason": {"type": ["string", "null"]},
        "created_at": _MOMENT,
        "updated_at": _MOMENT,
    },
    "examples": [PAYOUT_EXAMPLE],
}
PAYOUT_LIST: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A page of payouts, newest first.",
    "required": ["object", "data", "has_more"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Payout"}},
        "has_more": {"type": "boolean", "description": "Whether older payouts follow"},
    },
    "examples": [{"object": "list", "data": [PAYOUT_EXAMPLE], "has_more": False}],
}
_FUNDS: Final[dict[str, Any]] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["amount", "currency"],
        "properties": {
            "amount": {"type": "integer", "description": "In minor units"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
    },
}
BALANCE: Final[dict[str, Any]] = {
    "type": "object",
    "description": "Per currency: what may be paid out, and what payments in flight will bring.",
    "required": ["object", "available", "pending"],
    "properties": {
        "object": {"type": "string", "enum": ["balance"]},
        "available": {**_FUNDS, "description": "Captured, less refunds and payouts"},
        "pending": {**_FUNDS, "description": "Of payments created or authorized, not yet settled"},
    },
    "examples": [
        {
            "object": "balance",
            "available": [{"amount": 12000, "currency": "EUR"}],
            "pending": [{"amount": 1999, "currency": "EUR"}],
        }
    ],
}
SCHEMAS: Final = {"Payout": PAYOUT, "PayoutList": PAYOUT_LIST, "Balance": BALANCE}
