"""Request bodies of ``/v1/webhook_endpoints``, as the API accepts them.

``enabled_events`` names the event types an endpoint is sent (those webhooks are sent for), or
``"*"`` for every one; a type named twice counts once.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from pydantic import ConfigDict, Field

from workers.api.schemas import WholeNumber
from workers.core.endpoint_events import EVERY_EVENT, WEBHOOK_EVENT_TYPES
from workers.core.requests import StrictBody

MAX_EXPIRES_IN_S: Final = 7 * 86_400
DEFAULT_EXPIRES_IN_S: Final = 86_400

EventName = Literal[
    "*",
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "payment.refund_failed",
    "payment.charge_reversed",
    "payment.requires_capture",
    "payment.canceled",
    "payment.requires_action",
]
EVENT_NAMES: Final = (EVERY_EVENT, *(t.value for t in WEBHOOK_EVENT_TYPES))
if set(get_args(EventName)) != set(EVENT_NAMES):  # a type added to webhooks is added here too
    raise ImportError(f"EventName must be exactly {EVENT_NAMES}")
EnabledEvents = list[EventName]
# What a URL must look like; where it leads is checked beside (workers.core.webhook_urls).
# A port: 1 to 65535.
_PORT: Final = (
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
URL_PATTERN: Final = r"^https?://[A-Za-z0-9.-]+(:" + _PORT + r")?(/[!-~]*)?$"
URL_DESCRIPTION: Final = "Where to POST webhooks: https, outside private networks"
URL_FIELD: Final = Field(
    min_length=1, max_length=2000, pattern=URL_PATTERN, description=URL_DESCRIPTION
)
DESCRIPTION_FIELD: Final = Field(default=None, max_length=5000)
EVENTS_DESCRIPTION: Final = "The event types sent to it, or `*` for every one"


class WebhookEndpointCreate(StrictBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://shop.example/webhooks",
                    "enabled_events": ["payment.succeeded", "payment.failed"],
                    "description": "Order fulfilment",
                }
            ]
        }
    )

    url: str = URL_FIELD
    enabled_events: EnabledEvents = Field(
        default_factory=lambda: list[EventName](["*"]), min_length=1, description=EVENTS_DESCRIPTION
    )
    description: str | None = DESCRIPTION_FIELD


class WebhookEndpointUpdate(StrictBody):
    """What is left out stays as it was."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"enabled_events": ["*"], "disabled": False}]}
    )

    url: str | None = Field(
        default=None, min_length=1, max_length=2000, pattern=URL_PATTERN,
        description=URL_DESCRIPTION,
    )  # fmt: skip
    enabled_events: EnabledEvents | None = Field(
        default=None, min_length=1, description=EVENTS_DESCRIPTION
    )
    description: str | None = DESCRIPTION_FIELD
    disabled: bool | None = Field(
        default=None, description="true stops sending to it (its webhooks are kept); false again"
    )


class SecretRotation(StrictBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"expires_in_s": 86_400}]})

    expires_in_s: WholeNumber = Field(
        default=DEFAULT_EXPIRES_IN_S,
        ge=0,
        le=MAX_EXPIRES_IN_S,
        description="How long the current secrets still sign beside the new one (0: not at all)",
    )
