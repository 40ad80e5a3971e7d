"""A payout as merchants see it, kept from its events: pending, then paid or failed, once.

The shape ``GET /v1/payouts/<id>`` answers with; services that keep a view of payouts (the
notifier, for its webhooks) follow it from ``payout.requested``, ``payout.paid`` and
``payout.failed``. Status only moves forward, so a redelivered or late event changes nothing.
"""

from __future__ import annotations

from typing import Any

from workers.core.events import Event, EventType, PayoutFailed, PayoutRequested
from workers.core.projection import iso


def payout_initial(event: Event) -> dict[str, Any]:
    data = event.payload(PayoutRequested)
    at = iso(event.occurred_at)
    return {
        "id": event.payment_id,
        "object": "payout",
        "amount": data.amount,
        "currency": data.currency,
        "destination": data.destination,
        "status": "pending",
        "failure_reason": None,
        "created_at": at,
        "updated_at": at,
    }


def payout_advance(payout: dict[str, Any], event: Event) -> dict[str, Any]:
    """The payout after ``event`` (a new dict; the old one is left as it was)."""
    if payout["status"] != "pending" or event.type not in (
        EventType.PAYOUT_PAID, EventType.PAYOUT_FAILED,
    ):  # fmt: skip
        return payout
    failed = event.data if isinstance(event.data, PayoutFailed) else None
    return {
        **payout,
        "status": "failed" if failed else "paid",
        "failure_reason": failed.reason if failed else None,
        "updated_at": iso(event.occurred_at),
    }
