"""The processor with ``gateway.provider = "stripe"`` against stripe-mock: real API, relay,
processor, Kafka and PostgreSQL; every request it sends Stripe passes stripe-mock's validation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers.flow import Flow, flow
from tests.helpers.stripe_faults import Fault, Front, faulty_front
from tests.helpers.stripe_mock import StripeMock, post_stripe_event, stripe_mock
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.core.events import EventType
from workers.core.outbox import events_of

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
    events = httpx.get(f"{f.api_url}/v1/events", headers={"Authorization": f"Bearer {f.api_key}"})
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
