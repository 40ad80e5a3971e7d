"""Stripe's words FlowPay reads in more than one service: its metadata keys and decline codes.

The processor's connector writes FlowPay's ids into each object's ``metadata`` under these
keys, and the API's webhook intake reads them back; both turn Stripe's error and decline
codes into FlowPay's failure reasons the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from workers.core.events import FailureReason

PAYMENT_REFERENCE: Final = "flowpay_payment_id"
REFUND_REFERENCE: Final = "flowpay_refund_id"
PAYOUT_REFERENCE: Final = "flowpay_payout_id"
MERCHANT_REFERENCE: Final = "flowpay_merchant_id"

# Stripe's ids (pi_..., re_..., evt_...) and FlowPay's: short, plain ASCII, nothing to escape.
ID: Final = re.compile(r"[A-Za-z0-9_]{1,255}")
# Stripe's codes and statuses.
WORD: Final = re.compile(r"[a-z0-9_]{1,64}")

# Stripe's error codes and decline codes, as FlowPay's failure reasons. The decline code is
# read first (card_declined + insufficient_funds is insufficient funds); one not named here
# is card_declined, as Stripe advises for fraudulent, lost_card, stolen_card and the like.
_REASONS: Final[dict[str, FailureReason]] = {
    "insufficient_funds": "insufficient_funds",
    "expired_card": "expired_card",
    "incorrect_cvc": "incorrect_cvc",
    "invalid_cvc": "incorrect_cvc",
    "incorrect_number": "incorrect_number",
    "invalid_number": "incorrect_number",
    "invalid_expiry_month": "invalid_expiry",
    "invalid_expiry_year": "invalid_expiry",
    "processing_error": "processing_error",
    "authentication_required": "authentication_failed",
    "payment_intent_authentication_failure": "authentication_failed",
}


def failure_reason(code: str | None, decline_code: str | None) -> FailureReason:
    for candidate in (decline_code, code):
        if candidate in _REASONS:
            return _REASONS[candidate]
    return "card_declined"


def as_code(value: object) -> str | None:
    """``value`` if it is a well-formed code, else None."""
    return value if isinstance(value, str) and WORD.fullmatch(value) else None


def reference_of(obj: Mapping[str, Any], key: str) -> str | None:
    """FlowPay's id that a Stripe object carries in its metadata under ``key``, if well formed."""
    metadata = obj.get("metadata")
    value = metadata.get(key) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and ID.fullmatch(value) else None
