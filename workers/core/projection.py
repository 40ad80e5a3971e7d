"""How a payment's status follows its events: one rule set for every service that keeps a view.

Status only moves forward: each event names the statuses it may move a payment from, so a
redelivered or late event changes nothing. The API's read model applies these same rules in SQL,
given them as data (``workers.api.read_model``); a test runs both over the same events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from workers.core.events import Event, EventType, Failed, Initiated, Refunded
from workers.core.status import PaymentStatus

Status = PaymentStatus
STATUS_ADVANCES: Final[dict[EventType, tuple[Status, tuple[Status, ...]]]] = {
    EventType.PROCESSING: (Status.PROCESSING, (Status.INITIATED,)),
    EventType.SUCCEEDED: (Status.SUCCEEDED, (Status.INITIATED, Status.PROCESSING)),
    EventType.FAILED: (Status.FAILED, (Status.INITIATED, Status.PROCESSING)),
}


def iso(moment: datetime) -> str:
    """How FlowPay writes a moment in JSON: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def initial(event: Event) -> dict[str, Any]:
    """The payment object as ``payment.initiated`` describes it."""
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
        "refunded_amount": 0,
        "failure_reason": None,
        "created_at": at,
        "updated_at": at,
    }


def advance(payment: dict[str, Any], event: Event) -> dict[str, Any]:
    """The payment object after ``event`` (a new dict; the old one is left as it was)."""
    result = dict(payment)
    if event.type in STATUS_ADVANCES:
        status, from_statuses = STATUS_ADVANCES[event.type]
        if payment["status"] in from_statuses:
            result["status"] = status
            if event.type is EventType.FAILED:
                result["failure_reason"] = event.payload(Failed).reason
    elif event.type is EventType.REFUNDED:
        total = max(int(payment["refunded_amount"]), event.payload(Refunded).refunded_total)
        result["refunded_amount"] = total
        if total >= int(payment["amount"]):
            result["status"] = Status.REFUNDED
    if result != payment:
        result["updated_at"] = iso(event.occurred_at)
    return result
