"""Stripe's webhooks in: what a verified event says (pure), and the route on a running
serve-api, its events signed with the SDK's own helper and staged in the API's outbox."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from tests.helpers.api import Api, api, api_server, error_of, settings, table_counts
from workers.api.stripe_webhooks import PATH, report_of
from workers.core import local_http
from workers.core.config import Settings
from workers.core.events import EventType, GatewayReported
from workers.core.outbox import events_of

__all__ = ["api", "settings"]  # fixtures, used by name

SECRET = "whsec_test_secret_of_this_module"  # noqa: S105 (a test's own)


def stripe_event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": kind,
        "livemode": False,
        "data": {"object": obj},
    }


def intent(payment_id: str, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {
        "id": "pi_3Abc",
        "object": "payment_intent",
        "status": status,
        "amount": 1999,
        "amount_received": 1999 if status == "succeeded" else 0,
        "currency": "usd",
        "metadata": {"flowpay_payment_id": payment_id},
        **fields,
    }


# --- what an event says, without I/O ---------------------------------------------------------


def test_a_succeeded_intent_reports_its_payment_and_the_amount_received() -> None:
    reported = report_of(stripe_event("payment_intent.succeeded", intent("pay_1"), "evt_1"))
    assert reported is not None
    assert reported.reference == "pay_1"
    assert reported.merchant is None  # looked up from FlowPay's own payment, never trusted
    assert reported.report == GatewayReported(
        provider="stripe",
        gateway_event_id="evt_1",
        gateway_event_type="payment_intent.succeeded",
        object_id="pi_3Abc",
        status="succeeded",
        amount=1999,
        currency="USD",
        livemode=False,
    )


def test_a_failed_intent_reports_flowpays_failure_reason() -> None:
    error = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}
    obj = intent("pay_1", "requires_payment_method", last_payment_error=error)
    reported = report_of(stripe_event("payment_intent.payment_failed", obj))
    assert reported is not None
    assert reported.report.failure_reason == "insufficient_funds"


def test_an_authorization_completed_by_its_customer_reports_what_can_be_captured() -> None:
    held = intent("pay_1", "requires_capture", amount_capturable=1999)
    reported = report_of(stripe_event("payment_intent.amount_capturable_updated", held))
    assert reported is not None
    assert reported.reference == "pay_1"
    assert (reported.report.status, reported.report.amount) == ("requires_capture", 1999)


def test_a_refunded_charge_reports_the_amount_refunded_in_all() -> None:
    charge = {"id": "ch_1", "status": "succeeded", "amount": 1999, "amount_refunded": 500,
              "currency": "eur", "metadata": {"flowpay_payment_id": "pay_1"}}  # fmt: skip
    reported = report_of(stripe_event("charge.refunded", charge))
    assert reported is not None
    assert (reported.report.amount, reported.report.currency) == (500, "EUR")


def test_a_failed_payout_reports_its_payout_its_merchant_and_its_failure_code() -> None:
    payout = {"id": "po_1", "status": "failed", "amount": 700, "currency": "usd",
              "failure_code": "account_closed",
              "metadata": {"flowpay_payout_id": "po_flow_1", "flowpay_merchant_id": "mer_1"}}  # fmt: skip
    reported = report_of(stripe_event("payout.failed", payout))
    assert reported is not None
    assert (reported.reference, reported.merchant) == ("po_flow_1", "mer_1")
    assert reported.report.failure_reason == "account_closed"


@pytest.mark.parametrize(
    "event",
    [
        stripe_event("customer.created", {"id": "cus_1", "metadata": {}}),  # not acted on
        stripe_event("payment_intent.succeeded", intent("pay_1", metadata={})),  # not FlowPay's
        stripe_event("payment_intent.succeeded", intent("pay_1; DROP", "succeeded")),
        stripe_event("payment_intent.succeeded", intent("pay_1", "SUCCEEDED<script>")),
        stripe_event("payment_intent.succeeded", intent("pay_1", id="pi 1")),
        {"type": "payment_intent.succeeded", "data": "not an object"},
        {"id": "evt_1", "type": ["payment_intent.succeeded"], "data": {"object": {}}},
    ],
)
def test_events_not_about_flowpay_or_malformed_report_nothing(event: dict[str, Any]) -> None:
    assert report_of(event) is None


# --- the route on a running serve-api ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(module_settings: Settings) -> Iterator[str]:
    env = {"FLOWPAY_GATEWAY__STRIPE__WEBHOOK_SECRET": SECRET}
    with api_server(module_settings, env=env) as (url, _parent):
        yield url


def deliver(api: Api, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return local_http.client().post(api.url + PATH, content=body, headers=headers, timeout=30)


def signed(event: Any, *, at: int | None = None) -> tuple[bytes, str]:
    body = json.dumps(event)
    return body.encode(), stripe.WebhookSignature.generate_signature_header(body, SECRET, at)


def reported(db: psycopg.Connection[Any], payment_id: str) -> list[GatewayReported]:
    return [
        event.payload(GatewayReported)
        for event, _published in events_of(db, "api", payment_id)
        if event.type is EventType.GATEWAY_REPORTED
    ]


def test_a_signed_event_is_staged_once_for_the_processor(
    api: Api, db: psycopg.Connection[Any]
) -> None:
    payment = api.pay().json()
    event = stripe_event("payment_intent.succeeded", intent(payment["id"]))
    answer = deliver(api, *signed(event))
    assert (answer.status_code, answer.json()) == (200, {"received": True, "recorded": True})
    [staged] = events_of(db, "api", payment["id"])[1:]
    assert staged[0].merchant_id == api.merchant_id
    assert staged[0].payload(GatewayReported).gateway_event_id == event["id"]

    # The same event again (a replay, or Stripe's retry re-signed): acknowledged, nothing staged.
    before = table_counts(db)
    for again in (signed(event), signed(event, at=int(time.time()) - 60)):
        answer = deliver(api, *again)
        assert (answer.status_code, answer.json()) == (200, {"received": True, "recorded": False})
    assert table_counts(db) == before
    assert len(reported(db, payment["id"])) == 1


def test_unsigned_forged_or_stale_events_are_refused_and_change_nothing(
    api: Api, db: psycopg.Connection[Any]
) -> None:
    payment = api.pay().json()
    event = stripe_event("payment_intent.succeeded", intent(payment["id"]))
    body, signature = signed(event)
    forged = json.dumps(
        stripe_event("payment_intent.succeeded", intent(payment["id"], amount_received=1))
    )
    stale = signed(event, at=int(time.time()) - 301)
    before = table_counts(db)
    for attempt, code in [
        ((body, None), "signature_missing"),
        ((body, "t=1,v1=00"), "signature_invalid"),
        ((forged.encode(), signature), "signature_invalid"),  # another body under its signature
        ((body, stripe.WebhookSignature.generate_signature_header(body.decode(), "whsec_x")), "signature_invalid"),
        (stale, "signature_invalid"),
    ]:  # fmt: skip
        answer = deliver(api, *attempt)
        assert (answer.status_code, error_of(answer)["code"]) == (400, code)
    assert table_counts(db) == before


def test_events_for_payments_flowpay_never_made_are_acknowledged_and_change_nothing(
    api: Api, db: psycopg.Connection[Any]
) -> None:
    before = table_counts(db)
    for event in [
        stripe_event("payment_intent.succeeded", intent("pay_not_ours")),
        stripe_event("customer.created", {"id": "cus_1"}),
    ]:
        answer = deliver(api, *signed(event))
        assert (answer.status_code, answer.json()) == (200, {"received": True, "recorded": False})
    assert table_counts(db) == before


def test_oversized_and_non_json_bodies_are_refused(api: Api) -> None:
    huge = signed({"id": "evt_1", "pad": "x" * 300_000})
    assert deliver(api, *huge).status_code == 413
    text = b"not json"
    header = stripe.WebhookSignature.generate_signature_header(text.decode(), SECRET)
    answer = deliver(api, text, header)
    assert (answer.status_code, error_of(answer)["code"]) == (400, "body_invalid_json")
    answer = deliver(api, *signed([1, 2]))
    assert (answer.status_code, error_of(answer)["code"]) == (422, "body_invalid")
