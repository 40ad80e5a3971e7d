"""The processor with ``gateway.provider = "stripe"`` against stripe-mock: real API, relay,
processor, Kafka and PostgreSQL; every request it sends Stripe passes stripe-mock's validation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers.flow import Flow, flow
from tests.helpers.kafka import committed_total
from tests.helpers.stripe_faults import Fault, Front, faulty_front
from tests.helpers.stripe_mock import StripeMock, post_stripe_event, stripe_mock
from tests.helpers.waiting import wait_for
from tests.test_orchestrator import Stack
from tests.test_payouts import request_payout
from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.core.events import EventType
from workers.core.outbox import events_of
from workers.core.topics import GROUP_PROCESSOR_COMMANDS, topics

API_KEY = "sk_test_51ProcessorKeyNeverInALog"
WEBHOOK_SECRET = "whsec_processor_flow_secret"  # noqa: S105 (a test's own)
SUCCEEDED = {"status": "succeeded", "amount_received": 1999, "last_payment_error": None}
DECLINED = {
    "status": "requires_payment_method",
    "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"},
}  # fmt: skip


def terminal(payment: dict[str, Any]) -> bool:
    return payment["status"] in ("succeeded", "failed", "refunded")


@contextmanager
def stripe_stack(
    settings: Settings,
    tmp_path: Path,
    intent: dict[str, Any],
    env: dict[str, str] | None = None,
    faults: tuple[Fault, ...] = (),
) -> Iterator[tuple[Flow, StripeMock, Front]]:
    """FlowPay charging a stripe-mock whose PaymentIntents are ``intent``, through a front
    that serves ``faults``."""
    with (
        stripe_mock(tmp_path / "stripe", {"payment_intent": intent}) as mock,
        faulty_front(mock.url, *faults) as front,
    ):
        stripe_env = {
            "FLOWPAY_GATEWAY__PROVIDER": "stripe",
            "FLOWPAY_GATEWAY__STRIPE__API_KEY": API_KEY,
            "FLOWPAY_GATEWAY__STRIPE__BASE_URL": front.url,
            "FLOWPAY_GATEWAY__STRIPE__WEBHOOK_SECRET": WEBHOOK_SECRET,
            **(env or {}),
        }
        with flow(settings, tmp_path, extra_env=stripe_env) as f:
            yield f, mock, front
        assert API_KEY not in (tmp_path / "processor.log").read_text()
        assert WEBHOOK_SECRET not in (tmp_path / "api.log").read_text()


@pytest.fixture
def stripe_flow(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Flow, StripeMock]]:
    with stripe_stack(settings, tmp_path, request.param) as (f, mock, _front):
        yield f, mock


@pytest.mark.parametrize("stripe_flow", [SUCCEEDED], indirect=True)
def test_a_payment_charged_at_stripe_succeeds_and_refunds(
    stripe_flow: tuple[Flow, StripeMock],
) -> None:
    f, mock = stripe_flow
    payment = f.pay()
    assert f.wait_for(payment["id"], terminal)["status"] == "succeeded"
    state = f.processor_state(payment["id"])
    assert state is not None
    assert state["charge_id"].startswith("pi_")
    assert f.sim_charges() == []  # the simulator was never asked
    assert f.refund(payment["id"], 500).status_code == 202
    done = f.wait_for(payment["id"], lambda p: p["refunded_amount"] == 500)
    assert done["status"] == "succeeded"
    assert mock.requests() == ["POST /v1/payment_intents", "GET /v1/refunds", "POST /v1/refunds"]
    assert mock.refusals() == []


@pytest.mark.parametrize("stripe_flow", [SUCCEEDED], indirect=True)
def test_stripes_webhook_about_a_payment_reaches_the_log(
    stripe_flow: tuple[Flow, StripeMock],
) -> None:
    f, _mock = stripe_flow
    payment = f.pay()
    f.wait_for(payment["id"], terminal)
    intent = {"id": "pi_1", "status": "succeeded", "amount_received": 1999, "currency": "usd",
              "metadata": {"flowpay_payment_id": payment["id"]}}  # fmt: skip
    event = {"id": "evt_flow_1", "type": "payment_intent.succeeded", "livemode": False,
             "data": {"object": intent}}  # fmt: skip
    answer = post_stripe_event(f.api_url, event, WEBHOOK_SECRET)
    assert answer.json() == {"received": True, "recorded": True}

    def published() -> bool:
        with psycopg.connect(admin_url(f.settings)) as conn:
            return any(
                done and e.type is EventType.GATEWAY_REPORTED
                for e, done in events_of(conn, "api", payment["id"])
            )

    wait_for(published, what="the relay to publish gateway.reported")
    # The payment is settled: a report of another charge is logged and counted, not applied.
    wait_for(lambda: "contradicts" in (f.log_path("processor") or Path()).read_text(),
             what="the processor to pass over the report")  # fmt: skip
    assert f.payment(payment["id"])["status"] == "succeeded"


@pytest.mark.parametrize("stripe_flow", [DECLINED], indirect=True)
def test_a_card_stripe_declines_fails_with_its_reason(stripe_flow: tuple[Flow, StripeMock]) -> None:
    f, mock = stripe_flow
    payment = f.pay()
    done = f.wait_for(payment["id"], terminal)
    assert (done["status"], done["failure_reason"]) == ("failed", "insufficient_funds")
    assert mock.refusals() == []


# --- payments that wait on Stripe --------------------------------------------------------------

REDIRECT = "https://hooks.stripe.com/3d_secure_2/hosted?payment_intent=pi_1"
REQUIRES_ACTION = {
    "status": "requires_action",
    "last_payment_error": None,
    "next_action": {"type": "redirect_to_url", "redirect_to_url": {"url": REDIRECT, "return_url": None}},
}  # fmt: skip
PROCESSING = {"status": "processing", "last_payment_error": None, "next_action": None}


def stripe_event(event_id: str, kind: str, payment_id: str, intent_id: str, **fields: Any) -> Any:
    intent = {"id": intent_id, "object": "payment_intent", "currency": "usd",
              "metadata": {"flowpay_payment_id": payment_id}, **fields}  # fmt: skip
    return {"id": event_id, "type": kind, "livemode": False, "data": {"object": intent}}


def charge_of(f: Flow, payment_id: str) -> str:
    state = f.processor_state(payment_id)
    assert state is not None
    assert state["charge_id"] is not None
    return str(state["charge_id"])


def logged(f: Flow, role: str, text: str) -> bool:
    path = f.log_path(role)
    return path is not None and text in path.read_text()


@pytest.mark.parametrize("stripe_flow", [REQUIRES_ACTION], indirect=True)
def test_3d_secure_shows_requires_action_until_stripes_webhook_settles_it(
    stripe_flow: tuple[Flow, StripeMock],
) -> None:
    f, mock = stripe_flow
    payment = f.pay("pm_card_threeDSecure2Required")
    waiting = f.wait_for(payment["id"], lambda p: p["status"] == "requires_action")
    action = {"type": "redirect_to_url", "redirect_to_url": {"url": REDIRECT}}
    assert waiting["next_action"] == action
    events = local_http.client().get(
        f"{f.api_url}/v1/events", headers={"Authorization": f"Bearer {f.api_key}"}
    )
    shown = [e for e in events.json()["data"] if e["type"] == "payment.requires_action"]
    assert [e["data"]["object"]["next_action"] for e in shown] == [action]
    intent = charge_of(f, payment["id"])

    paid = stripe_event("evt_3ds_ok", "payment_intent.succeeded", payment["id"], intent,
                        status="succeeded", amount_received=1999)  # fmt: skip
    assert post_stripe_event(f.api_url, paid, WEBHOOK_SECRET).json()["recorded"] is True
    done = f.wait_for(payment["id"], terminal)
    assert (done["status"], done["next_action"]) == ("succeeded", None)

    # Stripe's retry of the same event stages nothing; a later report that contradicts the
    # settled payment is logged and counted, never applied.
    assert post_stripe_event(f.api_url, paid, WEBHOOK_SECRET).json()["recorded"] is False
    error = {"type": "card_error", "code": "card_declined"}
    late = stripe_event("evt_3ds_late", "payment_intent.payment_failed", payment["id"], intent,
                        status="requires_payment_method", last_payment_error=error)  # fmt: skip
    assert post_stripe_event(f.api_url, late, WEBHOOK_SECRET).json()["recorded"] is True
    wait_for(lambda: logged(f, "processor", "evt_3ds_late (payment_intent.payment_failed"
                            " of " + intent + ") contradicts"), what="the report passed over")  # fmt: skip
    assert f.payment(payment["id"])["status"] == "succeeded"
    assert f.processor_state(payment["id"])["state"] == "succeeded"  # type: ignore[index]
    assert mock.refusals() == []


def test_a_customer_who_never_authenticates_is_canceled_at_stripe_and_fails(
    settings: Settings, tmp_path: Path
) -> None:
    # stripe-mock answers every PaymentIntent with its one fixture (requires_action here):
    # Stripe's answer to the cancel comes from the front.
    canceled = Fault(200, path="/cancel", body={"id": "pi_gone", "object": "payment_intent",
                                                "status": "canceled"})  # fmt: skip
    env = {"FLOWPAY_PROCESSOR__REQUIRES_ACTION_TIMEOUT_S": "2"}
    with stripe_stack(settings, tmp_path, REQUIRES_ACTION, env, (canceled,)) as (f, mock, front):
        payment = f.pay("pm_card_threeDSecure2Required")
        f.wait_for(payment["id"], lambda p: p["status"] == "requires_action")
        done = f.wait_for(payment["id"], terminal)
        assert (done["status"], done["failure_reason"]) == ("failed", "action_expired")
        assert done["next_action"] is None
        assert front.faults == []  # the cancel was sent
        intent = charge_of(f, payment["id"])
        lookups = [r for r in mock.requests() if r == f"GET /v1/payment_intents/{intent}"]
        assert lookups, "the reconciler looked the charge up while the customer was away"
        assert mock.refusals() == []


@pytest.mark.parametrize("stripe_flow", [PROCESSING], indirect=True)
def test_a_charge_processing_at_stripe_is_looked_up_a_bounded_number_of_times(
    stripe_flow: tuple[Flow, StripeMock], settings: Settings
) -> None:
    f, mock = stripe_flow
    payment = f.pay("pm_usBankAccount")

    def left_to_the_webhook() -> bool:
        state = f.processor_state(payment["id"])
        return state is not None and state["charge_id"] is not None and not state["next_check_at"]

    wait_for(left_to_the_webhook, what="the processor to stop asking")
    intent = charge_of(f, payment["id"])
    lookups = [r for r in mock.requests() if r == f"GET /v1/payment_intents/{intent}"]
    assert len(lookups) == settings.processor.pending_max_checks
    assert f.payment(payment["id"])["status"] == "processing"

    error = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}
    failed = stripe_event("evt_ach_failed", "payment_intent.payment_failed", payment["id"], intent,
                          status="requires_payment_method", last_payment_error=error)  # fmt: skip
    assert post_stripe_event(f.api_url, failed, WEBHOOK_SECRET).json()["recorded"] is True
    done = f.wait_for(payment["id"], terminal)
    assert (done["status"], done["failure_reason"]) == ("failed", "insufficient_funds")
    assert mock.refusals() == []


# --- payouts Stripe pays days later ------------------------------------------------------------

PAYOUT_ENV = {
    # The orchestrator resends payout.send every second while the payout travels.
    "FLOWPAY_ORCHESTRATOR__COMMAND_TIMEOUT_S": "1",
    "FLOWPAY_PROCESSOR__PENDING_MAX_CHECKS": "2",
}


def payout_row(f: Flow, payout_id: str) -> dict[str, Any] | None:
    with psycopg.connect(admin_url(f.settings), autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, gateway_payout_id, failure, next_check_at, checks,"
            " (SELECT count(*) FROM processor.commands c WHERE c.payment_id = p.payout_id)"
            " FROM processor.payouts p WHERE payout_id = %s",
            (payout_id,),
        ).fetchone()
    keys = ("status", "gateway_payout_id", "failure", "next_check_at", "checks", "commands")
    return None if row is None else dict(zip(keys, row, strict=True))


def payout_event(event_id: str, kind: str, f: Flow, payout_id: str, gateway_id: str,
                 **fields: Any) -> dict[str, Any]:  # fmt: skip
    payout = {"id": gateway_id, "object": "payout", "amount": 700, "currency": "eur",
              "status": kind.removeprefix("payout."),
              "metadata": {"flowpay_payout_id": payout_id, "flowpay_merchant_id": f.merchant_id},
              **fields}  # fmt: skip
    return {"id": event_id, "type": kind, "livemode": False, "data": {"object": payout}}


def test_a_payout_in_transit_frees_its_command_and_lands_by_stripes_webhook_once(
    settings: Settings, tmp_path: Path
) -> None:
    with stripe_stack(settings, tmp_path, SUCCEEDED, PAYOUT_ENV) as (f, mock, _front):
        payout_id = request_payout(f, 700)
        wait_for(lambda: (payout_row(f, payout_id) or {}).get("status") == "in_transit",
                 what="the payout recorded in transit")  # fmt: skip
        row = payout_row(f, payout_id)
        assert row is not None
        gateway_id = row["gateway_payout_id"]
        assert gateway_id.startswith("po_")
        # The command is done: its offset committed, nothing holds the partition.
        commands = topics(f.settings).commands
        wait_for(lambda: committed_total(f.settings, GROUP_PROCESSOR_COMMANDS, commands) >= 1,
                 what="the payout's command committed")  # fmt: skip
        # Looked up at Stripe by its id a bounded number of times, then left to the webhook.
        wait_for(lambda: (payout_row(f, payout_id) or {}).get("checks") == 2,
                 what="the reconciler's look-ups")  # fmt: skip
        # The orchestrator's resends find it in transit: nothing sent again, nothing answered;
        # once the reconciler has let go, each resend looks it up once (a report may be lost).
        taken = (payout_row(f, payout_id) or {})["commands"]
        wait_for(lambda: (payout_row(f, payout_id) or {}).get("commands", 0) >= taken + 2,
                 what="resent commands taken")  # fmt: skip
        assert mock.requests().count("POST /v1/payouts") == 1
        assert mock.requests().count(f"GET /v1/payouts/{gateway_id}") >= 2 + 1
        assert f.emitted(payout_id) == []
        assert payout_row(f, payout_id)["next_check_at"] is None  # type: ignore[index]

        paid = payout_event("evt_po_paid", "payout.paid", f, payout_id, gateway_id)
        assert post_stripe_event(f.api_url, paid, WEBHOOK_SECRET).json()["recorded"] is True
        wait_for(lambda: Stack(f).ended(f"payout:{payout_id}"), what="the payout saga to end")
        assert Stack(f).saga(f"payout:{payout_id}")["outcome"] == "paid"
        assert [e["type"] for e in f.emitted(payout_id)] == ["payout.paid"]
        assert f.emitted(payout_id)[0]["data"] == {"gateway_payout_id": gateway_id, "amount": 700}

        # Stripe's retry stages nothing; a later report that contradicts it is logged, not applied.
        assert post_stripe_event(f.api_url, paid, WEBHOOK_SECRET).json()["recorded"] is False
        failed = payout_event("evt_po_failed", "payout.failed", f, payout_id, gateway_id,
                              failure_code="account_closed")  # fmt: skip
        assert post_stripe_event(f.api_url, failed, WEBHOOK_SECRET).json()["recorded"] is True
        wait_for(lambda: logged(f, "processor", f"contradicts payout {payout_id}"),
                 what="the contradicting report passed over")  # fmt: skip
        assert payout_row(f, payout_id)["status"] == "paid"  # type: ignore[index]
        assert [e["type"] for e in f.emitted(payout_id)] == ["payout.paid"]
        assert mock.refusals() == []


def test_a_payout_the_reconciler_finds_failed_at_stripe_fails_once(
    settings: Settings, tmp_path: Path
) -> None:
    # stripe-mock answers every payout in_transit: the look-up's answer comes from the front
    # (the create is POST /v1/payouts, the look-up GET /v1/payouts/<id>).
    failed = Fault(200, path="/v1/payouts/", body={
        "id": "po_failed_at_the_bank", "object": "payout", "status": "failed",
        "failure_code": "account_closed", "amount": 700, "currency": "eur"})  # fmt: skip
    with stripe_stack(settings, tmp_path, SUCCEEDED, PAYOUT_ENV, (failed,)) as (f, mock, front):
        payout_id = request_payout(f, 700)
        wait_for(lambda: Stack(f).ended(f"payout:{payout_id}"), what="the payout saga to end")
        saga = Stack(f).saga(f"payout:{payout_id}")
        assert (saga["state"], saga["outcome"]) == ("failed", "failed")
        assert front.faults == []  # the look-up was answered so
        row = payout_row(f, payout_id)
        assert row is not None
        assert (row["status"], row["failure"], row["next_check_at"]) == (
            "failed", "account_closed", None,
        )  # fmt: skip
        assert [e["type"] for e in f.emitted(payout_id)] == ["payout.failed"]
        assert mock.requests().count("POST /v1/payouts") == 1
        assert mock.refusals() == []


# --- manual capture through 3-D Secure ---------------------------------------------------------


def authorize_with_3ds(f: Flow) -> str:
    body = {"amount": 1999, "currency": "EUR", "payment_method": "pm_card_threeDSecure2Required",
            "capture_method": "manual"}  # fmt: skip
    created = Stack(f).post("/v1/payments", body)
    assert created.status_code == 202, created.text
    payment_id: str = created.json()["id"]
    waiting = f.wait_for(payment_id, lambda p: p["status"] == "requires_action")
    assert waiting["next_action"] == {
        "type": "redirect_to_url",
        "redirect_to_url": {"url": REDIRECT},
    }
    return payment_id


def test_an_authorization_needing_3d_secure_waits_then_is_captured_when_stripe_reports_it(
    settings: Settings, tmp_path: Path
) -> None:
    captured = Fault(200, path="/capture", body={
        "id": "pi_3ds_manual", "object": "payment_intent", "status": "succeeded",
        "amount_received": 1500})  # fmt: skip
    env = {"FLOWPAY_GATEWAY__STRIPE__RETURN_URL": "https://shop.example/back"}
    with stripe_stack(settings, tmp_path, REQUIRES_ACTION, env, (captured,)) as (f, mock, front):
        s = Stack(f)
        payment_id = authorize_with_3ds(f)
        saga = s.saga(f"payment:{payment_id}")
        assert (saga["state"], saga["step"]) == ("running", "authorize")  # no decision to take yet
        intent = charge_of(f, payment_id)
        sent = mock.log.read_text()
        assert "capture_method:manual" in sent
        assert "return_url:https://shop.example/back" in sent

        held = stripe_event("evt_3ds_held", "payment_intent.amount_capturable_updated",
                            payment_id, intent, status="requires_capture",
                            amount_capturable=1999)  # fmt: skip
        assert post_stripe_event(f.api_url, held, WEBHOOK_SECRET).json()["recorded"] is True
        ready = s.reaches(payment_id, "requires_capture")
        assert (ready["amount_capturable"], ready["next_action"]) == (1999, None)
        wait_for(lambda: s.saga(f"payment:{payment_id}")["step"] == "await_decision",
                 what="the saga to wait for the merchant")  # fmt: skip
        # Stripe's retry of the report changes nothing.
        assert post_stripe_event(f.api_url, held, WEBHOOK_SECRET).json()["recorded"] is False

        answer = s.post(f"/v1/payments/{payment_id}/capture", {"amount_to_capture": 1500})
        assert answer.status_code == 202, answer.text
        done = s.reaches(payment_id, "succeeded")
        assert done["amount_received"] == 1500
        assert front.faults == []  # the capture was sent
        types = [e["type"] for e in f.emitted(payment_id)]
        assert types == ["payment.requires_action", "payment.requires_capture", "payment.succeeded"]
        assert mock.refusals() == []


def test_an_authorization_found_completed_by_a_look_up_goes_on_to_requires_capture(
    settings: Settings, tmp_path: Path
) -> None:
    with stripe_stack(settings, tmp_path, REQUIRES_ACTION) as (f, mock, front):
        payment_id = authorize_with_3ds(f)
        intent = charge_of(f, payment_id)
        wait_for(lambda: f"GET /v1/payment_intents/{intent}" in mock.requests(),
                 what="a look-up finding the customer still away")  # fmt: skip
        assert f.payment(payment_id)["status"] == "requires_action"
        # The next look-up finds it (from the front) held for capture.
        front.faults.append(Fault(200, path=f"/v1/payment_intents/{intent}", body={
            "id": intent, "object": "payment_intent", "status": "requires_capture",
            "amount": 1999, "amount_capturable": 1999, "amount_received": 0}))  # fmt: skip
        ready = Stack(f).reaches(payment_id, "requires_capture")
        assert ready["next_action"] is None
        wait_for(lambda: Stack(f).saga(f"payment:{payment_id}")["step"] == "await_decision",
                 what="the saga to wait for the merchant")  # fmt: skip
        state = f.processor_state(payment_id)
        assert state is not None
        assert (state["state"], state["charge_id"], state["next_check_at"]) == (
            "requires_capture", intent, None,
        )  # fmt: skip
        assert mock.refusals() == []
