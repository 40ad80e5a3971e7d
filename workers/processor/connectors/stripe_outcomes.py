"""Stripe's answers as FlowPay's outcomes: pure code, no I/O (``stripe.py`` makes the calls).

A PaymentIntent, by its status (what creating it answered, or what a look-up found):

    succeeded                                   -> Charged
    requires_capture                            -> Authorized (capture or cancel later)
    requires_action                             -> AwaitingCustomer, with its next_action
    processing                                  -> Pending (the outcome comes later)
    requires_payment_method + last_payment_error -> Declined, with the error's reason (a
                                                   card_error's; any other is gateway_error)
    requires_payment_method (no error), requires_confirmation, a status not listed here
                                                -> Pending: never confirmed is not a decline
    canceled                                    -> Canceled

An error (``verdict``): a card error is a decline with its reason; 429, ``Stripe-Should-Retry:
true``, 409, 5xx, timeouts, lost connections and answers refused unread (over their bound, or
compressed) are retried, and once the retries run out the outcome is *unknown* (looked up, never
a decline); 401/403 are unknown too (nothing was done, and once the key is mended the
reconciler's next try goes through); any other refusal (400, 404) is ``Rejected``. Everything
read from an answer is bounded and checked: an answer that does not fit is ``MalformedAnswer``,
which the connector treats as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import stripe

from workers.core.stripe_terms import ID, WORD, as_code, failure_reason
from workers.processor.gateway import (
    Charged,
    Declined,
    GatewayRefund,
    RefundDone,
    RefundOutcome,
    Rejected,
    Unknown,
    unanswered,
)
from workers.processor.operations import (
    Authorized,
    AwaitingCustomer,
    Canceled,
    Captured,
    FoundPayout,
    GatewayPayment,
    NextAction,
    PaymentOutcome,
    PayoutFailed,
    PayoutSent,
    Pending,
)

_MAX_URL: Final = 2048
_MAX_DETAIL: Final = 200


class MalformedAnswer(ValueError):
    """An answer from Stripe that does not have the shape its API documents."""


@dataclass(frozen=True)
class Verdict:
    """What to do with an error: try the call again (same key), and what it is once not."""

    retry: bool
    outcome: Declined | Rejected | Unknown


# --- objects ----------------------------------------------------------------------------------


def payment_outcome(intent: Mapping[str, Any]) -> PaymentOutcome:
    """A PaymentIntent's state, as FlowPay's outcome."""
    intent_id = _id(intent.get("id"))
    status = _word(intent.get("status"), "status")
    match status:
        case "succeeded":
            return Charged(intent_id)
        case "requires_capture":
            return Authorized(intent_id, _amount(intent.get("amount_capturable")))
        case "requires_action":
            return AwaitingCustomer(intent_id, next_action(intent.get("next_action")))
        case "canceled":
            return Canceled(intent_id)
        case "requires_payment_method" if isinstance(intent.get("last_payment_error"), Mapping):
            return _declined(intent["last_payment_error"])
    return Pending(intent_id, status)


def found_payment(intent: Mapping[str, Any]) -> GatewayPayment:
    """A PaymentIntent a look-up found."""
    return GatewayPayment(
        _id(intent.get("id")),
        payment_outcome(intent),
        _amount(intent.get("amount")),
        _amount(intent.get("amount_received", 0)),
    )


def next_action(action: object) -> NextAction:
    """The customer's next step; only its type and a redirect's https URL are kept (a
    ``use_stripe_sdk`` action's data is for Stripe.js, with the intent's client secret)."""
    if not isinstance(action, Mapping):
        return NextAction("unknown")
    kind = _word(action.get("type"), "next_action.type")
    redirect = action.get("redirect_to_url")
    url = redirect.get("url") if isinstance(redirect, Mapping) else None
    if isinstance(url, str) and url.startswith("https://") and len(url) <= _MAX_URL:
        return NextAction(kind, url)
    return NextAction(kind)


def captured(intent: Mapping[str, Any]) -> Captured | Rejected:
    """What a capture answered: the intent, succeeded with what it received."""
    outcome = payment_outcome(intent)
    if isinstance(outcome, Charged):
        return Captured(outcome.charge_id, _amount(intent.get("amount_received")))
    return Rejected(f"capture left the payment {intent.get('status')}")


def canceled(intent: Mapping[str, Any]) -> Canceled | Rejected:
    outcome = payment_outcome(intent)
    if isinstance(outcome, Canceled):
        return outcome
    return Rejected(f"cancel left the payment {intent.get('status')}")


def refund_outcome(refund: Mapping[str, Any]) -> RefundOutcome:
    """A Refund: succeeded is done; pending (or requires_action) is not yet known, so it is
    looked up again later; failed and canceled are refusals."""
    refund_id = _id(refund.get("id"))
    status = _word(refund.get("status"), "status")
    if status == "succeeded":
        return RefundDone(refund_id)
    if status in ("failed", "canceled"):
        reason = _word(refund.get("failure_reason") or status, "failure_reason")
        return Rejected(f"refund {refund_id} {status}: {reason}")
    return Unknown(f"refund_{status}")


def found_refund(refund: Mapping[str, Any]) -> GatewayRefund:
    return GatewayRefund(
        _id(refund.get("id")),
        _word(refund.get("status"), "status"),
        _amount(refund.get("amount")),
    )


def payout_outcome(payout: Mapping[str, Any]) -> FoundPayout:
    """A Payout: failed and canceled are failures with Stripe's code; pending, in_transit and
    paid are sent (the first two land later: Stripe's webhook or a look-up says how)."""
    payout_id = _id(payout.get("id"))
    status = _word(payout.get("status"), "status")
    if status in ("failed", "canceled"):
        return PayoutFailed(payout_id, _word(payout.get("failure_code") or status, "code"))
    return PayoutSent(payout_id, status)


# --- errors -----------------------------------------------------------------------------------


def verdict(error: Exception) -> Verdict:
    """Whether to retry a failed call, and its outcome once retries stop."""
    if isinstance(error, TimeoutError | MalformedAnswer):
        reason = "timeout" if isinstance(error, TimeoutError) else "malformed_answer"
        return Verdict(isinstance(error, TimeoutError), Unknown(reason))
    if isinstance(error, stripe.APIConnectionError):
        return Verdict(True, Unknown(unanswered(error.__cause__)))
    if not isinstance(error, stripe.StripeError):
        raise TypeError(f"not an answer from Stripe: {type(error).__name__}") from error
    return _answered(error)


def _answered(error: stripe.StripeError) -> Verdict:
    status = error.http_status or 0
    body = _error_body(error)
    kind, code = body.get("type"), as_code(body.get("code") or error.code)
    should_retry = _header(error, "stripe-should-retry")
    unknown = Unknown(f"http_{status}")
    if isinstance(error, stripe.CardError) or kind == "card_error":
        decline_code = as_code(body.get("decline_code"))
        return Verdict(False, Declined(failure_reason(code, decline_code), decline_code))
    if status == 429 or should_retry == "true":
        return Verdict(True, unknown)
    if isinstance(error, stripe.IdempotencyError) or kind == "idempotency_error" or status == 409:
        # The key's first request may be in flight (409: wait and ask again) or may have done
        # something with other parameters: either way only a look-up can say what happened.
        return Verdict(status == 409 and should_retry != "false", unknown)
    if status >= 500:
        return Verdict(should_retry != "false", unknown)
    if status in (401, 403):
        # Nothing was done: the key is wrong or lacks a permission, which an operator mends.
        return Verdict(False, Unknown("authentication" if status == 401 else "permission"))
    message = _text(body.get("message") or error.user_message or "")
    return Verdict(False, Rejected(f"HTTP {status} {code or kind or 'error'}: {message}"))


def _error_body(error: stripe.StripeError) -> Mapping[str, Any]:
    body = error.json_body
    inner = body.get("error") if isinstance(body, Mapping) else None
    return inner if isinstance(inner, Mapping) else {}


def _header(error: stripe.StripeError, name: str) -> str | None:
    headers: Any = error.headers or {}
    for key, value in headers.items():
        if str(key).lower() == name:
            return str(value).strip().lower()
    return None


def _declined(payment_error: Mapping[str, Any]) -> Declined:
    if payment_error.get("type") != "card_error":
        # The confirmation failed for a reason not the card's (api_error, invalid_request_error):
        # nothing was charged, and it is no decline of the customer's card.
        return Declined("gateway_error", None)
    code = as_code(payment_error.get("code"))
    decline_code = as_code(payment_error.get("decline_code"))
    return Declined(failure_reason(code, decline_code), decline_code)


# --- bounded reading --------------------------------------------------------------------------


def _id(value: object) -> str:
    if isinstance(value, str) and ID.fullmatch(value):
        return value
    raise MalformedAnswer("an object without a well-formed id")


def _word(value: object, what: str) -> str:
    if isinstance(value, str) and WORD.fullmatch(value):
        return value
    raise MalformedAnswer(f"{what} is not a short lowercase word")


def _amount(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**15:
        return value
    raise MalformedAnswer("an amount that is not a whole number of minor units")


def _text(value: object) -> str:
    """A message to keep with an attempt: printable, one line, short."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return text[:_MAX_DETAIL]
