"""The OpenAPI schemas of ``/v1/events``: what its answers look like."""

from __future__ import annotations

from typing import Any, Final

from workers.api.events import ID_PATTERN

EVENT_ID_EXAMPLE: Final = "evt_0f8fad5bd9cb469fa16570867728950e"
TYPE_DESCRIPTION: Final = "`payment.succeeded`, `payment.refunded`, ..."


def sse_frame(
    description: str,
    id_: dict[str, str],
    schema: str | list[str],
    data_description: str,
    example: dict[str, str],
) -> dict[str, Any]:
    """The schema of one frame of a stream: its ``id`` (``id_``: pattern and description) and
    its ``data``, JSON of the document's ``schema`` (or of any one of several)."""
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in _listed(schema)]
    return {
        "type": "object",
        "description": description,
        "required": ["id", "data"],
        "properties": {
            "event": {"type": "string", "enum": ["message"], "description": "Always the default"},
            "id": {"type": "string", **id_},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": refs[0] if len(refs) == 1 else {"anyOf": refs},
                "description": data_description,
            },
        },
        "examples": [example],
    }


def _listed(schema: str | list[str]) -> list[str]:
    return [schema] if isinstance(schema, str) else schema


def event_stream(frame: str) -> dict[str, Any]:
    """A ``text/event-stream`` body whose frames are the document's ``frame`` schema: OpenAPI
    3.1 has no ``itemSchema``; see ``workers.api.openapi``."""
    return {
        "anyOf": [
            {"type": "string", "description": "The stream as a whole: text"},
            {"$ref": f"#/components/schemas/{frame}", "description": "Each of its events"},
        ]
    }


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
    frame = sse_frame(
        "One Server-Sent Event of the merchant's event stream: one event.",
        {"pattern": ID_PATTERN,
         "description": "The event's id; send it back as Last-Event-ID to resume after it"},
        "Event", "The event as `GET /v1/events/{event_id}` shows it",
        {"id": EVENT_ID_EXAMPLE, "data": '{"id":"' + EVENT_ID_EXAMPLE + '","...":"..."}'},
    )  # fmt: skip
    return {"Event": event, "EventList": event_list, "StreamedEvent": frame}
