"""The OpenAPI schemas of ``/v1/webhook_endpoints``: what its answers look like."""

from __future__ import annotations

from typing import Any, Final

from workers.api.endpoint_schemas import EVENT_NAMES

ENDPOINT_ID_PATTERN: Final = "^we_[0-9A-HJKMNP-TV-Z]{26}$"
ENDPOINT_ID_EXAMPLE: Final = "we_01JBZ3N6Q8X5V7T9R2M4K6H8F0"
SECRET_EXAMPLE: Final = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (an example)

ENDPOINT_EXAMPLE: Final[dict[str, Any]] = {
    "id": ENDPOINT_ID_EXAMPLE,
    "object": "webhook_endpoint",
    "url": "https://shop.example/webhooks",
    "enabled_events": ["payment.succeeded", "payment.failed"],
    "description": "Order fulfilment",
    "status": "enabled",
    "created": 1736933400,
}
_PROPERTIES: Final[dict[str, Any]] = {
    "id": {"type": "string", "pattern": ENDPOINT_ID_PATTERN},
    "object": {"type": "string", "enum": ["webhook_endpoint"]},
    "url": {"type": "string"},
    "enabled_events": {
        "type": "array",
        "items": {"type": "string", "enum": list(EVENT_NAMES)},
        "description": "The event types it is sent, or `*` for every one",
    },
    "description": {"type": ["string", "null"]},
    "status": {"type": "string", "enum": ["enabled", "disabled"]},
    "created": {"type": "integer", "description": "When it was created, in Unix seconds"},
    "secret": {
        "type": "string",
        "pattern": "^whsec_[A-Za-z0-9+/=]+$",
        "description": "Its signing secret: in the answer that made it, and never again",
    },
}
WEBHOOK_ENDPOINT: Final[dict[str, Any]] = {
    "type": "object",
    "description": "Where FlowPay POSTs the merchant's webhooks, signed (Standard Webhooks).",
    "required": list(ENDPOINT_EXAMPLE),
    "properties": _PROPERTIES,
    "examples": [ENDPOINT_EXAMPLE, {**ENDPOINT_EXAMPLE, "secret": SECRET_EXAMPLE}],
}
WEBHOOK_ENDPOINT_LIST: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A page of webhook endpoints, newest first.",
    "required": ["object", "data", "has_more"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookEndpoint"}},
        "has_more": {"type": "boolean", "description": "Whether older endpoints follow"},
    },
    "examples": [{"object": "list", "data": [ENDPOINT_EXAMPLE], "has_more": False}],
}
DELETED_WEBHOOK_ENDPOINT: Final[dict[str, Any]] = {
    "type": "object",
    "description": "A webhook endpoint deleted: it is sent nothing more.",
    "required": ["id", "object", "deleted"],
    "properties": {
        "id": {"type": "string", "pattern": ENDPOINT_ID_PATTERN},
        "object": {"type": "string", "enum": ["webhook_endpoint"]},
        "deleted": {"type": "boolean", "enum": [True]},
    },
    "examples": [{"id": ENDPOINT_ID_EXAMPLE, "object": "webhook_endpoint", "deleted": True}],
}
SCHEMAS: Final = {
    "WebhookEndpoint": WEBHOOK_ENDPOINT,
    "WebhookEndpointList": WEBHOOK_ENDPOINT_LIST,
    "DeletedWebhookEndpoint": DELETED_WEBHOOK_ENDPOINT,
}
