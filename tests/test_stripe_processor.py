"""The processor with ``gateway.provider = "stripe"`` against stripe-mock: real API, relay,
processor, Kafka and PostgreSQL; every request it sends Stripe passes stripe-mock's validation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from tests.helpers.flow import Flow, flow
from tests.helpers.stripe_mock import StripeMock, stripe_mock
from tests.helpers.waiting import wait_for
from workers.api.stripe_webhooks import PATH
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


@pytest.fixture
def stripe_flow(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Flow, StripeMock]]:
    with stripe_mock(tmp_path / "stripe", {"payment_intent": request.param}) as mock:
        env = {
            "FLOWPAY_GATEWAY__PROVIDER": "stripe",
            "FLOWPAY_GATEWAY__STRIPE__API_KEY": API_KEY,
            "FLOWPAY_GATEWAY__STRIPE__BASE_URL": mock.url,
            "FLOWPAY_GATEWAY__STRIPE__WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        with flow(settings, tmp_path, extra_env=env) as f:
            yield f, mock
        assert API_KEY not in (tmp_path / "processor.log").read_text()
        assert WEBHOOK_SECRET not in (tmp_path / "api.log").read_text()


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
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
    answer = httpx.post(
        f.api_url + PATH,
        content=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.json() == {"received": True, "recorded": True}

    def published() -> bool:
        with psycopg.connect(admin_url(f.settings)) as conn:
            return any(
                done and e.type is EventType.GATEWAY_REPORTED
                for e, done in events_of(conn, "api", payment["id"])
            )

    wait_for(published, what="the relay to publish gateway.reported")
    # The processor takes it as decided (nothing to do until the saga part settles by it).
    assert f.payment(payment["id"])["status"] == "succeeded"


@pytest.mark.parametrize("stripe_flow", [DECLINED], indirect=True)
def test_a_card_stripe_declines_fails_with_its_reason(stripe_flow: tuple[Flow, StripeMock]) -> None:
    f, mock = stripe_flow
    payment = f.pay()
    done = f.wait_for(payment["id"], terminal)
    assert (done["status"], done["failure_reason"]) == ("failed", "insufficient_funds")
    assert mock.refusals() == []
