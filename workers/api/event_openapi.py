"""The OpenAPI schemas of ``/v1/events``: what its answers look like."""

from __future__ import annotations

from typing import Any, Final

from workers.api.events import ID_PATTERN

EVENT_ID_EXAMPLE: Final = "evt_0f8fad5bd9cb469fa16570867728950e"
TYPE_DESCRIPTION: Final = "`payment.succeeded`, `payment.refunded`, ..."


def schemas(payment_example: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The schemas, with ``payment_example`` as the payment an example event carries."""
    event_example: dict[str, Any] = {
        "id": EVENT_ID_EXAMPLE,
        "object": "event",
        "type": "payment.succeeded",
        "created": 1736933401,
        "data": {"object": payment_example},
    }
    event: dict[str, Any] = {
        "type": "object",
        "description": "One event of one of the merchant's payments: the payment just after it.",
        "required": list(event_example),
        "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN},
            "object": {"type": "string", "enum": ["event"]},
            "type": {"type": "string", "description": TYPE_DESCRIPTION},
            "created": {"type": "integer", "description": "When it happened, in Unix seconds"},
            "data": {
                "type": "object",
                "required": ["object"],
                "properties": {"object": {"$ref": "#/components/schemas/Payment"}},
            },
        },
        "examples": [event_example],
    }
    event_list: dict[str, Any] = {
        "type": "object",
        "description": "A page of events, newest first.",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "has_more": {"type": "boolean", "description": "Whether older events follow"},
        },
        "examples": [{"object": "list", "data": [event_example], "has_more": False}],
    }
    frame: dict[str, Any] = {
        "type": "object",
        "description": "One Server-Sent Event of the merchant's event stream: one event.",
        "required": ["id", "data"],
        "properties": {
            "event": {"type": "string", "enum": ["message"], "description": "Always the default"},
            "id": {
                "type": "string",
                "pattern": ID_PATTERN,
                "description": "The event's id; send it back as Last-Event-ID to resume after it",
            },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/Event"},
                "description": "The event as `GET /v1/events/{event_id}` shows it",
            },
        },
        "examples": [
            {"id": EVENT_ID_EXAMPLE, "data": '{"id":"' + EVENT_ID_EXAMPLE + '","...":"..."}'}
        ],
    }
    return {"Event": event, "EventList": event_list, "StreamedEvent": frame}
