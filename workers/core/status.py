"""A payment's status as every service shows it, and which statuses are final.

As Stripe's PaymentIntents: a payment with ``capture_method: manual`` stops at
``requires_capture`` once authorized, until it is captured (``processing``, then ``succeeded``),
canceled (``processing``, then ``canceled``) or its authorization expires (``canceled``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class PaymentStatus(StrEnum):
    """The schema's CHECK constraints list the same values (a test holds them equal)."""

    INITIATED = "initiated"
    PROCESSING = "processing"
    # The customer must act (3-D Secure); the gateway's report, or the wait's end, settles it.
    REQUIRES_ACTION = "requires_action"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    REFUNDED = "refunded"


# Where a payment's event stream ends (a refund after success shows in a new stream).
TERMINAL: Final = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED, PaymentStatus.REFUNDED}
)


class CaptureMethod(StrEnum):
    """When a payment's authorization is captured: at once (one gateway charge), or on request."""

    AUTOMATIC = "automatic"
    MANUAL = "manual"


class CancellationReason(StrEnum):
    """Why a payment was canceled: a merchant's reason (Stripe's), or its authorization expired."""

    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    ABANDONED = "abandoned"
    EXPIRED = "expired"
