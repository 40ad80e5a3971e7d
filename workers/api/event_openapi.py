"""The OpenAPI schemas of ``/v1/events``: what its answers look like."""

from __future__ import annotations

from typing import Any, Final

from workers.api.events import ID_PATTERN

EVENT_ID_EXAMPLE: Final = "evt_0f8fad5bd9cb469fa16570867728950e"
EVENT_EXAMPLE: Final[dict[str, Any]] = {
    "id": EVENT_ID_EXAMPLE,
    "object": "event",
    "type": "payment.succeeded",
    "created": 1736933401,
    "data": {"object": {"id": "pay_01JBZ3N6Q8X5V7T9R2M4K6H8F0", "status": "succeeded"}},
}
EVENT: Final[dict[str, Any]] = {
    "type": "object",
    "description": "One event of one of the merchant's payments: the payment just after it.",
    "required": list(EVENT_EXAMPLE),
    "properties": {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "object": {"type": "string", "enum": ["event"]},
        "type": {"type": "string", "description": "`payment.succeeded`, `payment.refunded`, ..."},
        "created": {"type": "integer", "description": "When it happened, in Unix seconds"},
        "data": {
            "type": "object",
            "required": ["object"],
            "properties": {"object": {"$ref": "#/components/schemas/Payment"}},
        },
    },
    "examples": [EVENT_EXAMPLE],
}
EVENT_LIST: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A page of events, newest first.",
    "required": ["object", "data", "has_more"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        "has_more": {"type": "boolean", "description": "Whether older events follow"},
    },
    "examples": [{"object": "list", "data": [EVENT_EXAMPLE], "has_more": False}],
}
SCHEMAS: Final = {"Event": EVENT, "EventList": EVENT_LIST}
