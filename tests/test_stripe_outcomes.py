"""Stripe's answers as FlowPay's outcomes, without I/O: every PaymentIntent status, every error
shape Stripe documents (built as the SDK builds them), and the cases stripe-mock cannot produce."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from workers.core.stripe_terms import failure_reason
from workers.processor.connectors.stripe_outcomes import (
    MalformedAnswer,
    Verdict,
    canceled,
    captured,
    found_payment,
    payment_outcome,
    payout_outcome,
    refund_outcome,
    verdict,
)
from workers.processor.gateway import Charged, Declined, RefundDone, Rejected, Unknown
from workers.processor.operations import (
    Authorized,
    AwaitingCustomer,
    Canceled,
    Captured,
    NextAction,
    PayoutFailed,
    PayoutSent,
    Pending,
)

SECRET = "pi_3Abc_secret_DoNotKeepMe"  # noqa: S105 (a fake client secret)


def intent(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "pi_3Abc", "object": "payment_intent", "status": status, "amount": 1999,
            "amount_capturable": 0, "amount_received": 0, "client_secret": SECRET,
            "last_payment_error": None, "next_action": None, **fields}  # fmt: skip


def card_error(code: str, decline_code: str | None = None) -> dict[str, Any]:
    return {"type": "card_error", "code": code, "decline_code": decline_code, "message": "m"}


# --- PaymentIntent statuses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": "succeeded", "amount_received": 1999}, Charged("pi_3Abc")),
        ({"status": "requires_capture", "amount_capturable": 1999}, Authorized("pi_3Abc", 1999)),
        ({"status": "canceled"}, Canceled("pi_3Abc")),
        ({"status": "processing"}, Pending("pi_3Abc", "processing")),
        ({"status": "requires_confirmation"}, Pending("pi_3Abc", "requires_confirmation")),
        # Never confirmed is no decline: nothing says the card was refused.
        ({"status": "requires_payment_method"}, Pending("pi_3Abc", "requires_payment_method")),
        # A status Stripe adds later is waited on, never taken for a decline.
        ({"status": "requires_reauthorization"}, Pending("pi_3Abc", "requires_reauthorization")),
        (
            {"status": "requires_payment_method",
             "last_payment_error": card_error("card_declined", "insufficient_funds")},
            Declined("insufficient_funds", "insufficient_funds"),
        ),
        (
            {"status": "requires_payment_method",
             "last_payment_error": card_error("card_declined", "do_not_honor")},
            Declined("card_declined", "do_not_honor"),
        ),
        (
            {"status": "requires_payment_method",
             "last_payment_error": card_error("payment_intent_authentication_failure")},
            Declined("authentication_failed", None),
        ),
        (
            {"status": "requires_payment_method",
             "last_payment_error": {"type": "invalid_request_error", "code": "x"}},
            Declined("gateway_error", None),
        ),
    ],
)  # fmt: skip
def test_each_payment_intent_status(fields: dict[str, Any], expected: object) -> None:
    assert payment_outcome(intent(**fields)) == expected


def test_requires_action_waits_for_the_customer_with_where_to_send_them() -> None:
    action = {"type": "redirect_to_url",
              "redirect_to_url": {"url": "https://hooks.stripe.com/3d_secure/x", "return_url": "https://shop/r"}}  # fmt: skip
    assert payment_outcome(intent("requires_action", next_action=action)) == AwaitingCustomer(
        "pi_3Abc", NextAction("redirect_to_url", "https://hooks.stripe.com/3d_secure/x")
    )


def test_a_stripe_js_next_action_keeps_its_type_and_no_secret() -> None:
    action = {"type": "use_stripe_sdk", "use_stripe_sdk": {"client_secret": SECRET}}
    outcome = payment_outcome(intent("requires_action", next_action=action))
    assert outcome == AwaitingCustomer("pi_3Abc", NextAction("use_stripe_sdk", None))
    assert SECRET not in repr(outcome)


@pytest.mark.parametrize(
    "url", ["http://plain.example/3ds", "javascript:alert(1)", "https://x/" + "a" * 3000]
)
def test_a_redirect_that_is_not_a_short_https_url_is_not_shown(url: str) -> None:
    action = {"type": "redirect_to_url", "redirect_to_url": {"url": url}}
    outcome = payment_outcome(intent("requires_action", next_action=action))
    assert outcome == AwaitingCustomer("pi_3Abc", NextAction("redirect_to_url", None))


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "pi_'; DROP"},
        {"id": None},
        {"status": "Succeeded!"},
        {"status": "succeeded\n"},
        {"status": "requires_capture", "amount_capturable": -1},
        {"status": "requires_capture", "amount_capturable": True},
        {"status": "requires_capture", "amount_capturable": "1999"},
    ],
)
def test_an_answer_out_of_shape_is_malformed(fields: dict[str, Any]) -> None:
    with pytest.raises(MalformedAnswer):
        payment_outcome({**intent("succeeded"), **fields})


def test_a_found_payment_says_what_was_asked_and_received() -> None:
    found = found_payment(intent("succeeded", amount_received=1500))
    assert (found.charge_id, found.outcome, found.amount, found.amount_received) == (
        "pi_3Abc", Charged("pi_3Abc"), 1999, 1500
    )  # fmt: skip


def test_capture_and_cancel_answers() -> None:
    assert captured(intent("succeeded", amount_received=700)) == Captured("pi_3Abc", 700)
    assert isinstance(captured(intent("requires_capture", amount_capturable=5)), Rejected)
    assert canceled(intent("canceled")) == Canceled("pi_3Abc")
    assert isinstance(canceled(intent("succeeded")), Rejected)


# --- refunds and payouts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refund", "expected"),
    [
        ({"status": "succeeded"}, RefundDone("re_1")),
        # Not yet done: the reconciler looks it up again, never sends a second one.
        ({"status": "pending"}, Unknown("refund_pending")),
        ({"status": "requires_action"}, Unknown("refund_requires_action")),
        ({"status": "failed", "failure_reason": "expired_or_canceled_card"},
         Rejected("refund re_1 failed: expired_or_canceled_card")),
        ({"status": "canceled"}, Rejected("refund re_1 canceled: canceled")),
    ],
)  # fmt: skip
def test_each_refund_status(refund: dict[str, Any], expected: object) -> None:
    assert refund_outcome({"id": "re_1", "amount": 100, **refund}) == expected


@pytest.mark.parametrize(
    ("payout", "expected"),
    [
        ({"status": "pending"}, PayoutSent("po_1", "pending")),
        ({"status": "in_transit"}, PayoutSent("po_1", "in_transit")),
        ({"status": "paid"}, PayoutSent("po_1", "paid")),
        (
            {"status": "failed", "failure_code": "account_closed"},
            PayoutFailed("po_1", "account_closed"),
        ),
        ({"status": "canceled"}, PayoutFailed("po_1", "canceled")),
    ],
)
def test_each_payout_status(payout: dict[str, Any], expected: object) -> None:
    assert payout_outcome({"id": "po_1", "amount": 100, **payout}) == expected


# --- card errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "decline_code", "reason"),
    [
        ("card_declined", "generic_decline", "card_declined"),
        ("card_declined", "insufficient_funds", "insufficient_funds"),
        ("card_declined", "fraudulent", "card_declined"),
        ("card_declined", "lost_card", "card_declined"),
        ("card_declined", "stolen_card", "card_declined"),
        ("card_declined", "authentication_required", "authentication_failed"),
        ("card_declined", None, "card_declined"),
        ("expired_card", None, "expired_card"),
        ("incorrect_cvc", None, "incorrect_cvc"),
        ("invalid_cvc", None, "incorrect_cvc"),
        ("incorrect_number", None, "incorrect_number"),
        ("invalid_number", None, "incorrect_number"),
        ("invalid_expiry_month", None, "invalid_expiry"),
        ("invalid_expiry_year", None, "invalid_expiry"),
        ("processing_error", None, "processing_error"),
        ("card_decline_rate_limit_exceeded", None, "card_declined"),
        (None, None, "card_declined"),
    ],
)
def test_card_errors_fail_with_their_reason(
    code: str | None, decline_code: str | None, reason: str
) -> None:
    assert failure_reason(code, decline_code) == reason
    error = stripe.CardError(  # type: ignore[no-untyped-call]  # stripe's __init__ is unannotated
        "Your card was declined.", "payment_method", code, http_status=402,
        json_body={"error": card_error(code or "", decline_code)},
    )  # fmt: skip
    assert verdict(error) == Verdict(False, Declined(reason, decline_code))


# --- every other error shape -------------------------------------------------------------------


def api_error(
    cls: type[stripe.StripeError], status: int, kind: str, code: str | None = None,
    headers: dict[str, str] | None = None,
) -> stripe.StripeError:  # fmt: skip
    body = {"error": {"type": kind, "code": code, "message": "m"}}
    if issubclass(cls, stripe.InvalidRequestError):
        return cls("m", None, code, http_status=status, json_body=body, headers=headers)
    return cls("m", http_status=status, json_body=body, headers=headers, code=code)


RETRY = "Stripe-Should-Retry"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # Rate limited (a lock timeout too): retried, and unknown once retries run out.
        (api_error(stripe.RateLimitError, 429, "invalid_request_error", "rate_limit"),
         Verdict(True, Unknown("http_429"))),
        (api_error(stripe.RateLimitError, 429, "invalid_request_error", "lock_timeout"),
         Verdict(True, Unknown("http_429"))),
        (api_error(stripe.InvalidRequestError, 400, "invalid_request_error", "x", {RETRY: "true"}),
         Verdict(True, Unknown("http_400"))),
        # The key's first request still in flight: it may yet charge.
        (api_error(stripe.APIError, 409, "idempotency_error"), Verdict(True, Unknown("http_409"))),
        (api_error(stripe.APIError, 409, "idempotency_error", headers={RETRY: "false"}),
         Verdict(False, Unknown("http_409"))),
        # The key used with other parameters: what the first did only a look-up can say.
        (api_error(stripe.IdempotencyError, 400, "idempotency_error"),
         Verdict(False, Unknown("http_400"))),
        (api_error(stripe.APIError, 500, "api_error"), Verdict(True, Unknown("http_500"))),
        (api_error(stripe.APIError, 500, "api_error", headers={"stripe-should-retry": "false"}),
         Verdict(False, Unknown("http_500"))),
        (api_error(stripe.APIError, 502, "api_error"), Verdict(True, Unknown("http_502"))),
        (api_error(stripe.APIError, 503, "api_error"), Verdict(True, Unknown("http_503"))),
        # The key refused: nothing was done; unknown, so the reconciler tries again once mended.
        (api_error(stripe.AuthenticationError, 401, "invalid_request_error"),
         Verdict(False, Unknown("authentication"))),
        (api_error(stripe.PermissionError, 403, "invalid_request_error"),
         Verdict(False, Unknown("permission"))),
        (api_error(stripe.InvalidRequestError, 400, "invalid_request_error", "parameter_invalid_integer"),
         Verdict(False, Rejected("HTTP 400 parameter_invalid_integer: m"))),
        (api_error(stripe.InvalidRequestError, 404, "invalid_request_error", "resource_missing"),
         Verdict(False, Rejected("HTTP 404 resource_missing: m"))),
        (api_error(stripe.InvalidRequestError, 400, "invalid_request_error", "payment_intent_unexpected_state"),
         Verdict(False, Rejected("HTTP 400 payment_intent_unexpected_state: m"))),
        (TimeoutError(), Verdict(True, Unknown("timeout"))),
        (MalformedAnswer("x"), Verdict(False, Unknown("malformed_answer"))),
    ],
)  # fmt: skip
def test_each_error_shape(error: Exception, expected: Verdict) -> None:
    assert verdict(error) == expected


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (httpx.ConnectTimeout("t"), "timeout"),
        (httpx.ReadTimeout("t"), "timeout"),
        (httpx.ConnectError("refused"), "connection"),
        (httpx.RemoteProtocolError("dropped"), "connection"),
    ],
)
def test_network_failures_are_retried_then_unknown(cause: Exception, reason: str) -> None:
    error = stripe.APIConnectionError(  # type: ignore[no-untyped-call]  # unannotated in stripe
        "Unexpected error communicating with Stripe", should_retry=True
    )
    error.__cause__ = cause
    assert verdict(error) == Verdict(True, Unknown(reason))


def test_no_error_but_a_card_error_is_ever_a_decline() -> None:
    shapes = [
        api_error(cls, status, kind)
        for cls, status, kind in [
            (stripe.APIError, 500, "api_error"),
            (stripe.APIError, 409, "idempotency_error"),
            (stripe.IdempotencyError, 400, "idempotency_error"),
            (stripe.RateLimitError, 429, "invalid_request_error"),
            (stripe.AuthenticationError, 401, "invalid_request_error"),
            (stripe.InvalidRequestError, 400, "invalid_request_error"),
        ]
    ]
    assert not any(isinstance(verdict(e).outcome, Declined) for e in shapes)


def test_a_hostile_message_is_kept_short_and_printable() -> None:
    error = api_error(stripe.InvalidRequestError, 400, "invalid_request_error", "bad")
    assert isinstance(error.json_body, dict)
    error.json_body["error"]["message"] = "line\x00\x1b[31m\n" + "x" * 10_000
    outcome = verdict(error).outcome
    assert isinstance(outcome, Rejected)
    assert outcome.detail.isprintable()
    assert len(outcome.detail) < 260


def test_a_code_out_of_shape_is_not_kept() -> None:
    error = stripe.CardError(  # type: ignore[no-untyped-call]  # stripe's __init__ is unannotated
        "m", None, "card_declined", http_status=402,
        json_body={"error": card_error("card_declined", "<script>" * 20)},
    )  # fmt: skip
    assert verdict(error).outcome == Declined("card_declined", None)
