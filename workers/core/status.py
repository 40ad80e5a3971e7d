"""A payment's status as every service shows it, and which statuses are final."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class PaymentStatus(StrEnum):
    """The schema's CHECK constraints list the same values (a test holds them equal)."""

    INITIATED = "initiated"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"


# Where a payment's event stream ends (a refund after success shows in a new stream).
TERMINAL: Final = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.REFUNDED})
