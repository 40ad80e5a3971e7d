"""The Stripe connector against stripe-mock: every call FlowPay makes passes Stripe's own request
validation (a refused request fails the test), with FlowPay's idempotency keys, and the faults
stripe-mock cannot make (429, 409, 5xx, timeouts) served by a real HTTP front before it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from tests.helpers.servers import free_port
from tests.helpers.stripe_faults import Fault, faulty_front
from tests.helpers.stripe_mock import StripeMock, stripe_mock
from workers.core.config import GatewaySettings, StripeSettings
from workers.core.outbound_http import MAX_ANSWER_BYTES
from workers.processor.connectors.stripe import StripeGateway
from workers.processor.gateway import (
    Charged,
    ChargeRequest,
    Declined,
    GatewayUnreachable,
    RefundDone,
    Unknown,
    charge_key,
    refund_key,
)
from workers.processor.operations import (
    Authorized,
    AwaitingCustomer,
    Canceled,
    Captured,
    NextAction,
    PayoutRequest,
    PayoutSent,
    cancel_key,
    capture_key,
    payout_key,
)

API_KEY = "sk_test_51FlowPayNeverLogThisKey"
PAYMENT = "pay_01JD3M4V6PBK2ZQ8W7X9Y0A1BC"
REDIRECT = "https://hooks.stripe.com/3d_secure_2/hosted?x=1"
CARD_DECLINE = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}

# Each a stripe-mock whose PaymentIntents (and refunds) answer so.
MOCKS: dict[str, dict[str, dict[str, Any]]] = {
    "succeeded": {"payment_intent": {"status": "succeeded", "amount_received": 1999,
                                     "last_payment_error": None, "next_action": None}},
    "requires_capture": {"payment_intent": {"status": "requires_capture", "amount_capturable": 1999,
                                            "last_payment_error": None, "next_action": None}},
    "requires_action": {"payment_intent": {
        "status": "requires_action", "last_payment_error": None,
        "next_action": {"type": "redirect_to_url", "redirect_to_url": {"url": REDIRECT, "return_url": "https://shop.example/back"}},
    }},
    "declined": {"payment_intent": {"status": "requires_payment_method", "next_action": None,
                                    "last_payment_error": CARD_DECLINE}},
    "canceled": {"payment_intent": {"status": "canceled", "last_payment_error": None, "next_action": None}},
    "refunded_before": {"refund": {"metadata": {"flowpay_refund_id": "re_01JD3M4V6PBK2ZQ8W7X9Y0A1BC"}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def mocks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, StripeMock]]:
    """One stripe-mock per fixture set, started once for the module."""
    with ExitStack() as stack:
        base = tmp_path_factory.mktemp("stripe-mocks")
        yield {
            name: stack.enter_context(stripe_mock(base / name, patches))
            for name, patches in MOCKS.items()
        }


def config(base_url: str, return_url: str | None = None, **gateway: Any) -> GatewaySettings:
    stripe = StripeSettings(api_key=SecretStr(API_KEY), base_url=base_url, timeout_s=2.0,
                            return_url=return_url)  # fmt: skip
    values = {"provider": "stripe", "stripe": stripe, "max_retries": 2, "backoff_base_s": 0.01,
              "backoff_max_s": 0.05, **gateway}  # fmt: skip
    return GatewaySettings(**values)


def run(base_url: str, operation: Any, **gateway: Any) -> Any:
    """``operation(gateway)`` on a connector to ``base_url``, closed afterwards."""

    async def go() -> Any:
        connector = StripeGateway(config(base_url, **gateway))
        try:
            return await operation(connector)
        finally:
            await connector.close()

    return asyncio.run(go())


def charge(capture: str = "automatic") -> ChargeRequest:
    return ChargeRequest(PAYMENT, 1999, "USD", "pm_card_visa", capture)  # type: ignore[arg-type]


def valid(mock: StripeMock, since: int) -> list[str]:
    """What stripe-mock got after ``since``, once it is sure it refused none of it."""
    assert mock.refusals(since) == []
    return mock.requests(since)


def sent(mock: StripeMock, since: int) -> str:
    """The request data stripe-mock logged after ``since``."""
    with mock.log.open("rb") as log:
        log.seek(since)
        return log.read().decode()


# --- payments --------------------------------------------------------------------------------


def test_a_charge_is_a_payment_intent_created_confirmed_and_captured(
    mocks: dict[str, StripeMock],
) -> None:
    mock = mocks["succeeded"]
    mark = mock.mark()
    outcome = run(mock.url, lambda g: g.authorize(charge()))
    assert isinstance(outcome, Charged)
    assert outcome.charge_id.startswith("pi_")
    assert valid(mock, mark) == ["POST /v1/payment_intents"]
    data = sent(mock, mark)
    for field in ("amount:1999", "currency:usd", "confirm:true", "capture_method:automatic",
                  "payment_method:pm_card_visa", f"flowpay_payment_id:{PAYMENT}"):  # fmt: skip
        assert field in data


def test_manual_capture_authorizes_then_captures_part_and_cancels(
    mocks: dict[str, StripeMock],
) -> None:
    held = mocks["requires_capture"]
    mark = held.mark()
    outcome = run(held.url, lambda g: g.authorize(charge("manual")))
    assert isinstance(outcome, Authorized)
    assert outcome.amount_capturable == 1999
    assert "capture_method:manual" in sent(held, mark)
    # Today's processor cannot hold a payment: a held one is unknown, never a decline.
    assert run(held.url, lambda g: g.charge(charge("manual"))) == Unknown("requires_capture")
    assert valid(held, mark) == ["POST /v1/payment_intents"] * 2

    settled = mocks["succeeded"]
    mark = settled.mark()
    pi = "pi_3PartialCapture"
    captured = run(settled.url, lambda g: g.capture(pi, 1500, capture_key(PAYMENT)))
    assert captured == Captured(pi, 1999)  # stripe-mock's fixture: its amount_received
    assert valid(settled, mark) == [f"POST /v1/payment_intents/{pi}/capture"]
    assert "amount_to_capture:1500" in sent(settled, mark)

    voided = mocks["canceled"]
    mark = voided.mark()
    assert run(voided.url, lambda g: g.cancel(pi, cancel_key(PAYMENT))) == Canceled(pi)
    assert valid(voided, mark) == [f"POST /v1/payment_intents/{pi}/cancel"]


def test_3d_secure_waits_for_the_customer_with_the_redirect(mocks: dict[str, StripeMock]) -> None:
    mock = mocks["requires_action"]
    mark = mock.mark()
    request = ChargeRequest(PAYMENT, 1999, "EUR", "pm_card_threeDSecure2Required",
                            return_url="https://shop.example/back")  # fmt: skip
    outcome = run(mock.url, lambda g: g.authorize(request))
    assert isinstance(outcome, AwaitingCustomer)
    assert outcome.next_action == NextAction("redirect_to_url", REDIRECT)
    # An automatic charge answers the same: the processor shows the payment as requires_action.
    charged = run(mock.url, lambda g: g.charge(request))
    assert isinstance(charged, AwaitingCustomer)
    assert charged.next_action == outcome.next_action
    assert "return_url:https://shop.example/back" in sent(mock, mark)
    assert valid(mock, mark) == ["POST /v1/payment_intents"] * 2


def test_the_configured_return_url_goes_with_every_confirmation(
    mocks: dict[str, StripeMock],
) -> None:
    mock = mocks["requires_action"]
    back = "https://shop.example/payments/return"
    mark = mock.mark()
    charged = run(mock.url, lambda g: g.charge(charge()), return_url=back)
    authorized = run(mock.url, lambda g: g.authorize(charge("manual")), return_url=back)
    assert isinstance(charged, AwaitingCustomer)
    assert isinstance(authorized, AwaitingCustomer)
    # stripe-mock validates it against Stripe's specification: a refusal fails valid().
    assert valid(mock, mark) == ["POST /v1/payment_intents"] * 2
    data = sent(mock, mark)
    assert data.count(f"return_url:{back}") == 2
    assert "capture_method:manual" in data
    # A payment's own return URL, when it has one, goes instead.
    mark = mock.mark()
    own = ChargeRequest(PAYMENT, 1999, "EUR", "pm_card_visa", return_url="https://own.example/r")
    run(mock.url, lambda g: g.charge(own), return_url=back)
    assert "return_url:https://own.example/r" in sent(mock, mark)
    assert back not in sent(mock, mark)


def test_without_a_return_url_none_is_sent(mocks: dict[str, StripeMock]) -> None:
    mock = mocks["succeeded"]
    mark = mock.mark()
    run(mock.url, lambda g: g.charge(charge()))
    assert "return_url" not in sent(mock, mark)


def test_a_declined_card_fails_with_its_reason(mocks: dict[str, StripeMock]) -> None:
    mock = mocks["declined"]
    mark = mock.mark()
    outcome = run(mock.url, lambda g: g.charge(charge()))
    assert outcome == Declined("insufficient_funds", "insufficient_funds")
    assert valid(mock, mark) == ["POST /v1/payment_intents"]


def test_look_up_by_the_intent_id_else_by_flowpays_payment_id(
    mocks: dict[str, StripeMock],
) -> None:
    mock = mocks["succeeded"]
    mark = mock.mark()
    [by_id] = run(mock.url, lambda g: g.look_up(PAYMENT, "pi_3Known"))
    assert (by_id.charge_id, by_id.outcome) == ("pi_3Known", Charged("pi_3Known"))
    [by_reference] = run(mock.url, lambda g: g.look_up(PAYMENT))
    assert isinstance(by_reference.outcome, Charged)
    [found] = run(mock.url, lambda g: g.find_charges(PAYMENT))
    assert (found.status, found.amount) == ("succeeded", 1999)
    search = "GET /v1/payment_intents/search"
    assert valid(mock, mark) == ["GET /v1/payment_intents/pi_3Known", search, search]
    assert f"metadata['flowpay_payment_id']:'{PAYMENT}'" in sent(mock, mark)


@pytest.mark.parametrize("reference", ["pay_1' OR metadata['x']:'y", "pay_1\n", "", "pay 1"])
def test_a_reference_that_would_need_escaping_is_refused_before_any_call(
    mocks: dict[str, StripeMock], reference: str
) -> None:
    mock = mocks["succeeded"]
    mark = mock.mark()
    with pytest.raises(ValueError, match="not an id"):
        run(mock.url, lambda g: g.look_up(reference))
    assert mock.requests(mark) == []


# --- refunds and payouts ---------------------------------------------------------------------


def test_a_partial_refund_carries_flowpays_refund_id_and_key(mocks: dict[str, StripeMock]) -> None:
    mock = mocks["succeeded"]
    refund_id = "re_01JD3M4V6PBK2ZQ8W7X9Y0A1BD"
    mark = mock.mark()
    outcome = run(mock.url, lambda g: g.refund("pi_3Paid", 500, refund_key(refund_id), refund_id))
    assert isinstance(outcome, RefundDone)
    assert outcome.refund_id.startswith("re_")
    # It first asks whether this refund was made already (Stripe forgets keys after a day).
    assert valid(mock, mark) == ["GET /v1/refunds", "POST /v1/refunds"]
    data = sent(mock, mark)
    assert "amount:500" in data
    assert f"flowpay_refund_id:{refund_id}" in data
    assert "payment_intent:pi_3Paid" in data


def test_a_refund_made_before_is_answered_not_made_again(mocks: dict[str, StripeMock]) -> None:
    mock = mocks["refunded_before"]
    refund_id = "re_01JD3M4V6PBK2ZQ8W7X9Y0A1BC"
    mark = mock.mark()
    outcome = run(mock.url, lambda g: g.refund("pi_3Paid", 500, refund_key(refund_id), refund_id))
    assert isinstance(outcome, RefundDone)
    [found] = run(mock.url, lambda g: g.find_refunds(refund_id, "pi_3Paid"))
    assert found.status == "succeeded"
    assert run(mock.url, lambda g: g.find_refunds("re_other", "pi_3Paid")) == []
    assert valid(mock, mark) == ["GET /v1/refunds"] * 3
    with pytest.raises(GatewayUnreachable):
        run(mock.url, lambda g: g.find_refunds(refund_id))


def test_a_payout_carries_its_ids_and_key(mocks: dict[str, StripeMock]) -> None:
    mock = mocks["succeeded"]
    mark = mock.mark()
    request = PayoutRequest(
        "po_01JD3M4V6PBK2ZQ8W7X9Y0A1BC", "mer_01JD3M4V6PBK2ZQ8W7X9Y0A1BC", 5000, "USD"
    )
    outcome = run(mock.url, lambda g: g.payout(request))
    assert isinstance(outcome, PayoutSent)
    assert outcome.status == "in_transit"
    connected = PayoutRequest(request.payout_id, request.merchant_id, 5000, "USD", "acct_1Merchant")
    assert isinstance(run(mock.url, lambda g: g.payout(connected)), PayoutSent)
    assert valid(mock, mark) == ["POST /v1/payouts"] * 2
    data = sent(mock, mark)
    assert f"flowpay_payout_id:{request.payout_id}" in data
    assert "currency:usd" in data


# --- idempotency keys, retries, unknown outcomes ----------------------------------------------


def test_every_call_sends_flowpays_key_and_the_sdks_api_version(
    mocks: dict[str, StripeMock],
) -> None:
    mock = mocks["succeeded"]
    with faulty_front(mock.url) as front:
        run(front.url, lambda g: g.authorize(charge()))
        run(front.url, lambda g: g.capture("pi_3X", None, capture_key(PAYMENT)))
        run(front.url, lambda g: g.cancel("pi_3X", cancel_key(PAYMENT)))
        run(front.url, lambda g: g.payout(PayoutRequest("po_1", "mer_1", 5, "USD", "acct_1M")))
    assert front.keys() == [charge_key(PAYMENT), capture_key(PAYMENT), cancel_key(PAYMENT),
                            payout_key("po_1")]  # fmt: skip
    assert {h["stripe-version"] for h in front.seen} == {"2026-08-26.dahlia"}
    assert front.seen[-1]["stripe-account"] == "acct_1M"


@pytest.mark.parametrize(
    "fault",
    [
        Fault(429, {"type": "invalid_request_error", "code": "rate_limit"}),
        Fault(429, {"type": "invalid_request_error", "code": "lock_timeout"}),
        Fault(400, {"type": "invalid_request_error"}, {"Stripe-Should-Retry": "true"}),
        Fault(409, {"type": "idempotency_error"}),
        Fault(503, {"type": "api_error"}),
    ],
)
def test_retried_with_the_same_key_until_stripe_answers(
    mocks: dict[str, StripeMock], fault: Fault
) -> None:
    mock = mocks["succeeded"]
    mark = mock.mark()
    with faulty_front(mock.url, fault, fault) as front:
        outcome = run(front.url, lambda g: g.charge(charge()))
    assert isinstance(outcome, Charged)
    assert front.keys() == [charge_key(PAYMENT)] * 3
    assert valid(mock, mark) == ["POST /v1/payment_intents"]


@pytest.mark.parametrize(
    ("fault", "attempts", "reason"),
    [
        (Fault(500, {"type": "api_error"}), 3, "http_500"),
        (Fault(500, {"type": "api_error"}, {"Stripe-Should-Retry": "false"}), 1, "http_500"),
        (Fault(409, {"type": "idempotency_error"}), 3, "http_409"),
        (Fault(429, {"type": "invalid_request_error", "code": "rate_limit"}), 3, "http_429"),
        (Fault(400, {"type": "idempotency_error"}), 1, "http_400"),
        (Fault(401, {"type": "invalid_request_error"}), 1, "authentication"),
        (Fault(200, hold_s=3.0), 3, "timeout"),
    ],
)
def test_no_answer_is_an_unknown_outcome_never_a_decline(
    mocks: dict[str, StripeMock], fault: Fault, attempts: int, reason: str
) -> None:
    with faulty_front(mocks["succeeded"].url, *[fault] * attempts) as front:
        outcome = run(front.url, lambda g: g.charge(charge()), max_retries=2)
    assert outcome == Unknown(reason)
    assert front.keys() == [charge_key(PAYMENT)] * attempts


def test_a_gateway_nobody_answers_at_is_unknown_and_a_lookup_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert run(url, lambda g: g.charge(charge())) == Unknown("connection")
    with pytest.raises(GatewayUnreachable, match="connection"):
        run(url, lambda g: g.look_up(PAYMENT))


def test_an_answer_over_the_bound_is_refused_unread_and_the_outcome_unknown(
    mocks: dict[str, StripeMock],
) -> None:
    """Stripe's answer is outside input too: one of 2 MiB (a charge that succeeded, padded) is
    read no further than MAX_ANSWER_BYTES, retried with the same key, then unknown."""
    padded = {"id": "pi_3X", "object": "payment_intent", "status": "succeeded",
              "amount_received": 1999, "metadata": {"flowpay_payment_id": PAYMENT},
              "description": "x" * (2 * MAX_ANSWER_BYTES)}  # fmt: skip
    faults = [Fault(200, body=padded)] * 3
    with faulty_front(mocks["succeeded"].url, *faults) as front:
        outcome = run(front.url, lambda g: g.charge(charge()), max_retries=2)
    assert outcome == Unknown("answer_refused")
    assert front.keys() == [charge_key(PAYMENT)] * 3


def test_a_servers_cookies_are_neither_kept_nor_sent_back(mocks: dict[str, StripeMock]) -> None:
    fault = Fault(503, {"type": "api_error"}, {"Set-Cookie": "tracker=abc; Path=/"})
    with faulty_front(mocks["succeeded"].url, fault) as front:
        outcome = run(front.url, lambda g: g.charge(charge()))
    assert isinstance(outcome, Charged)
    assert len(front.seen) == 2
    assert "cookie" not in front.seen[1]


def test_a_card_error_answer_is_a_decline_at_once(mocks: dict[str, StripeMock]) -> None:
    fault = Fault(402, {"type": "card_error", "code": "expired_card"})
    with faulty_front(mocks["succeeded"].url, fault) as front:
        outcome = run(front.url, lambda g: g.charge(charge()))
    assert outcome == Declined("expired_card", None)
    assert len(front.seen) == 1


def test_the_api_key_is_never_logged_nor_shown(
    mocks: dict[str, StripeMock],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    refused = Fault(401, {"type": "invalid_request_error", "message": "Invalid API Key provided"})
    with faulty_front(mocks["succeeded"].url, refused) as front:
        outcomes = [run(front.url, lambda g: g.charge(charge())) for _ in range(2)]
        gateway_repr = repr(StripeGateway(config(front.url)))
    assert outcomes == [Unknown("authentication"), Charged(outcomes[1].charge_id)]
    assert front.seen[0]["authorization"] == f"Bearer {API_KEY}"  # it is sent, to Stripe only
    printed = capfd.readouterr()
    seen = caplog.text + printed.out + printed.err + gateway_repr + repr(config(front.url))
    assert "refused FlowPay's key" in caplog.text
    assert API_KEY not in seen
    assert API_KEY[8:] not in seen


def test_log_files_of_this_module_hold_no_key(mocks: dict[str, StripeMock]) -> None:
    assert all(API_KEY not in Path(m.log).read_text() for m in mocks.values())


@pytest.mark.parametrize("url", ["http://shop.example/back", "shop.example/back", "ftp://x/y"])
def test_a_return_url_a_customer_would_reach_in_the_clear_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="must be https"):
        StripeSettings(return_url=url)


def test_a_return_url_is_https_or_this_machine() -> None:
    assert StripeSettings(return_url="https://shop.example/r?x=1").return_url == (
        "https://shop.example/r?x=1"
    )
    assert StripeSettings(return_url="http://127.0.0.1:8000/r").return_url is not None
