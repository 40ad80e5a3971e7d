"""Changes to merchants' webhook endpoints, as the API sends them to the notifier.

The API keeps what each merchant asked for (``api.webhook_endpoints``) and stages each change
in its outbox; the relay publishes it to ``<prefix>.webhook_endpoints`` (keyed by the endpoint's
id, so one endpoint's changes stay in order), and the notifier applies it to the endpoints it
sends to. Like a payment event it travels in CloudEvents' Kafka binding, binary mode, with the
whole envelope in the JSON value.

A new endpoint's signing secret, and a rotated one, travel in their event SEALED for the
endpoint (``workers.core.webhook_secrets``, the keyring every role holding ``[secrets] key``
shares): the notifier must have them to sign, the API shows them once, and the endpoints topic
keeps its messages (a dead-lettered one is copied too), so nothing on Kafka is in plain text.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field, model_validator

from workers.core.errors import MalformedEvent, UnknownEventType
from workers.core.events import (
    Encoded,
    EventType,
    Headers,
    cloudevent_headers,
    decode_envelope,
)
from workers.core.outbox import encoded_row
from workers.core.sealing import Sealed

SCHEMA_VERSION: Final = 1
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the scheme's prefix)
# The payment events webhooks are sent for: an endpoint's enabled_events name some of them, or
# "*" (every one of them).
WEBHOOK_EVENT_TYPES: Final = (
    EventType.SUCCEEDED, EventType.FAILED, EventType.REFUNDED, EventType.REFUND_FAILED,
    EventType.CHARGE_REVERSED, EventType.REQUIRES_CAPTURE, EventType.CANCELED,
    EventType.REQUIRES_ACTION,
)  # fmt: skip
EVERY_EVENT: Final = "*"


def wants(enabled_events: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint with these ``enabled_events`` is sent a webhook of ``event_type``."""
    if event_type not in WEBHOOK_EVENT_TYPES:
        return False
    return any(enabled in (EVERY_EVENT, event_type) for enabled in enabled_events)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


class EndpointEventType(StrEnum):
    CREATED = "webhook_endpoint.created"
    UPDATED = "webhook_endpoint.updated"
    SECRET_ROTATED = "webhook_endpoint.secret_rotated"  # noqa: S105 (a type, not a secret)
    DELETED = "webhook_endpoint.deleted"


# What each type must carry besides the envelope.
_REQUIRED: Final = {
    EndpointEventType.CREATED: ("url", "enabled_events", "secret_key_id", "secret_sealed"),
    EndpointEventType.UPDATED: ("url", "enabled_events"),
    EndpointEventType.SECRET_ROTATED: ("secret_key_id", "secret_sealed"),
    EndpointEventType.DELETED: (),
}


class EndpointEvent(BaseModel):
    """One change of one endpoint. ``updated`` carries its URL and event types as they now
    stand, and ``disabled`` when the merchant (dis)abled it (None: as it was, so an automatic
    disabling stays); ``secret_rotated`` the new secret (sealed, as ``created``'s) and when the
    others stop signing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    type: EndpointEventType
    endpoint_id: str = Field(min_length=1, max_length=255)
    merchant_id: str = Field(min_length=1, max_length=255)
    occurred_at: datetime
    schema_version: int = Field(ge=1, le=SCHEMA_VERSION)
    correlation_id: str = Field(min_length=1, max_length=255)
    source: str = Field(min_length=1)
    url: str | None = Field(default=None, max_length=2000)
    enabled_events: tuple[str, ...] | None = None
    disabled: bool | None = None
    # The secret sealed for this endpoint: the id of the key, and the sealed bytes (base64).
    secret_key_id: str | None = Field(default=None, min_length=1, max_length=64)
    secret_sealed: Base64Bytes | None = Field(default=None, max_length=1024, repr=False)
    # secret_rotated: the endpoint's earlier secrets sign until then (None: they stop at once).
    previous_expire_at: datetime | None = None

    @model_validator(mode="after")
    def _carries_what_its_type_needs(self) -> EndpointEvent:
        missing = [name for name in _REQUIRED[self.type] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.type} event needs {', '.join(missing)}")
        return self

    @property
    def sealed_secret(self) -> Sealed | None:
        if self.secret_key_id is None or self.secret_sealed is None:
            return None
        return Sealed(self.secret_key_id, self.secret_sealed)


def new_endpoint_event(
    type_: EndpointEventType,
    *,
    endpoint_id: str,
    merchant_id: str,
    source: str,
    correlation_id: str | None = None,
    **fields: Any,
) -> EndpointEvent:
    return EndpointEvent(
        event_id=uuid.uuid4(),
        type=type_,
        endpoint_id=endpoint_id,
        merchant_id=merchant_id,
        occurred_at=datetime.now(UTC),
        schema_version=SCHEMA_VERSION,
        correlation_id=correlation_id or str(uuid.uuid4()),
        source=source,
        **fields,
    )


def encode_endpoint_event(event: EndpointEvent) -> Encoded:
    headers = cloudevent_headers(
        str(event.event_id),
        event.source,
        event.type.value,
        event.endpoint_id,
        event.occurred_at,
        [
            ("ce_merchantid", event.merchant_id.encode()),
            ("ce_correlationid", event.correlation_id.encode()),
            ("ce_schemaversion", str(event.schema_version).encode()),
        ],
    )
    return Encoded(event.endpoint_id.encode(), event.model_dump_json().encode(), headers)


def decode_endpoint_event(value: bytes | None, headers: Headers | None = None) -> EndpointEvent:
    """Parse one message of the endpoints topic; raises MalformedEvent or UnknownEventType."""
    return decode_envelope(
        EndpointEvent, value, headers, MalformedEvent, UnknownEventType, "endpoint event"
    )


def endpoint_outbox_row(event: EndpointEvent) -> tuple[Any, ...]:
    """The event as a row of an outbox (``workers.core.outbox``)."""
    return encoded_row(event.event_id, encode_endpoint_event(event))
