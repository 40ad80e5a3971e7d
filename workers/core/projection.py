"""How a payment's status follows its events: one rule set for every service that keeps a view.

Status only moves forward: each event names the statuses it may move a payment from, so a
redelivered or late event changes nothing. An authorization is taken once: a payment that holds
one (``amount_capturable`` > 0, through its capture or cancel) takes no other, so an executor
that answers a resent command again cannot move a capture in progress back. The API's read
model applies these same rules in SQL, given them as data (``workers.api.read_model``); a test
runs both over the same events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from workers.core.events import (
    Canceled,
    CancelRequested,
    Event,
    EventType,
    Failed,
    Initiated,
    Refunded,
    RequiresAction,
    RequiresCapture,
    Succeeded,
)
from workers.core.status import CaptureMethod, PaymentStatus

Status = PaymentStatus
# Where a charge's outcome may still come from (a customer's action only delays it).
_UNSETTLED: Final = (Status.INITIATED, Status.PROCESSING, Status.REQUIRES_ACTION)
STATUS_ADVANCES: Final[dict[EventType, tuple[Status, tuple[Status, ...]]]] = {
    EventType.PROCESSING: (Status.PROCESSING, (Status.INITIATED,)),
    EventType.REQUIRES_ACTION: (Status.REQUIRES_ACTION, (Status.INITIATED, Status.PROCESSING)),
    # From requires_action: a manual payment whose customer authenticated (3-D Secure).
    EventType.REQUIRES_CAPTURE: (
        Status.REQUIRES_CAPTURE,
        (Status.INITIATED, Status.PROCESSING, Status.REQUIRES_ACTION),
    ),
    # The API moves the payment as it takes the request; the event says the same, once more.
    EventType.CAPTURE_REQUESTED: (Status.PROCESSING, (Status.REQUIRES_CAPTURE,)),
    EventType.CANCEL_REQUESTED: (Status.PROCESSING, (Status.REQUIRES_CAPTURE,)),
    EventType.SUCCEEDED: (Status.SUCCEEDED, _UNSETTLED),
    EventType.FAILED: (Status.FAILED, _UNSETTLED),
    EventType.CANCELED: (
        Status.CANCELED,
        (Status.INITIATED, Status.PROCESSING, Status.REQUIRES_CAPTURE),
    ),
}
# Moving to these ends what an authorization held: nothing is left to capture.
RELEASING: Final = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELED})


def iso(moment: datetime) -> str:
    """How FlowPay writes a moment in JSON: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def capture_method(created: EventType) -> CaptureMethod:
    """A payment's capture method, told by the event that created it."""
    if created is EventType.AUTHORIZATION_REQUESTED:
        return CaptureMethod.MANUAL
    return CaptureMethod.AUTOMATIC


def initial(event: Event) -> dict[str, Any]:
    """The payment object as the event that created it describes it."""
    data = event.payload(Initiated)
    at = iso(event.occurred_at)
    return {
        "id": event.payment_id,
        "object": "payment",
        "status": Status.INITIATED,
        "amount": data.amount,
        "currency": data.currency,
        "payment_method": data.payment_method,
        "description": data.description,
        "metadata": dict(data.metadata),
        "capture_method": capture_method(event.type),
        "amount_capturable": 0,
        "amount_received": 0,
        "refunded_amount": 0,
        "failure_reason": None,
        "cancellation_reason": None,
        "next_action": None,
        "created_at": at,
        "updated_at": at,
    }


def advance(payment: dict[str, Any], event: Event) -> dict[str, Any]:
    """The payment object after ``event`` (a new dict; the old one is left as it was)."""
    result = dict(payment)
    if event.type in STATUS_ADVANCES:
        status, from_statuses = STATUS_ADVANCES[event.type]
        if payment["status"] in from_statuses and not _authorized_again(payment, event):
            result["status"] = status
            result.update(_amounts(payment, event))
    elif event.type is EventType.REFUNDED:
        total = max(int(payment["refunded_amount"]), event.payload(Refunded).refunded_total)
        result["refunded_amount"] = total
        if total >= received(payment):
            result["status"] = Status.REFUNDED
    if result != payment:
        result["updated_at"] = iso(event.occurred_at)
    return result


def received(payment: dict[str, Any]) -> int:
    """What a payment took (views kept before partial captures lack the field: all of it)."""
    return int(payment.get("amount_received") or payment["amount"])


def next_action_of(data: object) -> dict[str, Any] | None:
    """The payment's ``next_action`` after an event with payload ``data`` (Stripe's shape)."""
    if isinstance(data, RequiresAction):
        return data.next_action.model_dump(exclude_none=True)
    return None


def _authorized_again(payment: dict[str, Any], event: Event) -> bool:
    return event.type is EventType.REQUIRES_CAPTURE and int(payment.get("amount_capturable", 0)) > 0


def _amounts(payment: dict[str, Any], event: Event) -> dict[str, Any]:
    """What the event sets besides the status."""
    data = event.data
    # Shown while the payment waits for the customer; gone once it moves on.
    changes: dict[str, Any] = {"next_action": next_action_of(data)}
    if event.type in RELEASING:
        changes["amount_capturable"] = 0
    if isinstance(data, Failed):
        changes["failure_reason"] = data.reason
    elif isinstance(data, RequiresCapture):
        changes["amount_capturable"] = data.amount_capturable
    elif isinstance(data, Succeeded):
        changes["amount_received"] = data.amount_captured or int(payment["amount"])
    elif isinstance(data, Canceled | CancelRequested):
        changes["cancellation_reason"] = data.cancellation_reason.value
    return changes
