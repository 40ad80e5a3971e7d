"""What the processor makes of a charge the gateway holds unsettled (waiting for the customer, or
processing) and of the gateway's reports: pure rules, no I/O."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workers.core.commands import Authorize, Command, CommandType, new_command
from workers.core.config import ProcessorSettings
from workers.core.events import EventType, GatewayReported, RequiresAction
from workers.processor.captures import answer
from workers.processor.charging import Charging
from workers.processor.gateway import AwaitingCustomer, Charged, Declined, NextAction, Pending
from workers.processor.operations import Authorized, Canceled, GatewayPayment
from workers.processor.reports import reason_of, verdict
from workers.processor.settlements import Defer, Settle, Settler
from workers.processor.states import State
from workers.processor.store import Change, Payment
from workers.processor.waits import Expire, Waits

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CONFIG = ProcessorSettings(
    recheck_first_s=60, recheck_max_s=3600, requires_action_timeout_s=3600, pending_max_checks=3
)
WAITING = Payment(
    "pay_1", "mer_1", 1999, "USD", "pm_card_threeDSecure2Required", "corr_1",
    state=State.REQUIRES_ACTION.value, charge_id="pi_1", failure_reason=None, refunded_amount=0,
    next_check_at=NOW, checks=0, reversed_charge_id=None, created_at=NOW, updated_at=NOW,
    settled_at=NOW,
)  # fmt: skip


def waits() -> Waits:
    # The verdicts read the settings alone: no store, gateway or settler is ever reached.
    nothing: Any = None
    return Waits(Charging(CONFIG, nothing, nothing, Settler(nothing)), nothing)


def found(outcome: Any) -> GatewayPayment:
    return GatewayPayment("pi_1", outcome, 1999, 0)


STILL_WAITING = found(AwaitingCustomer("pi_1", NextAction("use_stripe_sdk")))


def test_a_customer_still_away_is_asked_again_within_the_wait() -> None:
    verdict = waits().verdict(WAITING, STILL_WAITING, NOW + timedelta(seconds=3570))
    # ``verdict == Defer(approx(30.0))`` field by field (after_s is typed a float, not an approx).
    assert type(verdict) is Defer, verdict
    assert verdict.after_s == pytest.approx(30.0)  # never past the wait's end
    assert verdict.charge_id is None


def test_a_wait_that_is_over_expires() -> None:
    verdict = waits().verdict(WAITING, STILL_WAITING, NOW + timedelta(seconds=3601))
    assert verdict == Expire()


@pytest.mark.parametrize(
    ("outcome", "state", "reason"),
    [
        (Charged("pi_1"), State.SUCCEEDED, None),
        (Declined("authentication_failed"), State.FAILED, "authentication_failed"),
        (Canceled("pi_1"), State.FAILED, "action_expired"),
    ],
)
def test_what_the_gateway_holds_settles_a_waiting_payment(
    outcome: Any, state: State, reason: str | None
) -> None:
    verdict = waits().verdict(WAITING, found(outcome), NOW)
    assert isinstance(verdict, Settle)
    assert (verdict.state, verdict.reason) == (state, reason)


def test_a_charge_processing_at_the_gateway_is_asked_a_bounded_number_of_times() -> None:
    processing = replace(WAITING, state=State.PROCESSING.value)
    pending = found(Pending("pi_1", "processing"))
    asked = waits().verdict(replace(processing, checks=2), pending, NOW)
    assert asked == Defer(240.0, "pi_1")
    left = waits().verdict(replace(processing, checks=3), pending, NOW)
    assert left == Defer(None, "pi_1")  # no more checks: the webhook settles it


def test_a_processing_charge_that_turns_to_the_customer_waits_for_them() -> None:
    processing = replace(WAITING, state=State.PROCESSING.value)
    verdict = waits().verdict(processing, STILL_WAITING, NOW)
    assert isinstance(verdict, Settle)
    assert verdict.state == State.REQUIRES_ACTION


@pytest.mark.parametrize(
    ("reported", "reason"),
    [("insufficient_funds", "insufficient_funds"), ("lost_card", "card_declined"), (None, "card_declined")],
)  # fmt: skip
def test_a_reported_failure_is_one_of_flowpays_reasons(reported: str | None, reason: str) -> None:
    assert reason_of(reported) == reason


# --- a manual payment's authorization through 3-D Secure --------------------------------------

MANUAL = replace(WAITING, capture_method="manual")
HELD = found(Authorized("pi_1", 1999))


def emitted(settle: Settle) -> dict[str, Any]:
    """The event a settlement stages, as it goes out."""
    return dict(json.loads(settle.event[2]))


def test_an_authorization_the_customer_completed_goes_on_to_requires_capture() -> None:
    verdict = waits().verdict(MANUAL, HELD, NOW)
    assert isinstance(verdict, Settle)
    assert (verdict.state, verdict.charge_id, verdict.next_check_at) == (
        State.REQUIRES_CAPTURE, "pi_1", None,
    )  # fmt: skip
    event = emitted(verdict)
    assert event["type"] == "payment.requires_capture"
    assert event["data"] == {"authorization_id": "pi_1", "amount_capturable": 1999}


def test_an_automatic_payment_is_never_moved_to_a_hold() -> None:
    verdict = waits().verdict(WAITING, HELD, NOW)
    assert verdict == Defer(60.0)  # looked up again, within the customer's wait


def test_a_manual_payment_still_waiting_for_its_customer_expires_as_a_charge_does() -> None:
    assert waits().verdict(MANUAL, STILL_WAITING, NOW + timedelta(seconds=3601)) == Expire()
    declined = waits().verdict(MANUAL, found(Declined("authentication_failed")), NOW)
    assert isinstance(declined, Settle)
    assert (declined.state, declined.reason) == (State.FAILED, "authentication_failed")


def report(kind: str, object_id: str = "pi_1") -> GatewayReported:
    return GatewayReported(provider="stripe", gateway_event_id="evt_1", gateway_event_type=kind,
                           object_id=object_id, status="requires_capture", livemode=False)  # fmt: skip


def test_stripes_report_of_a_completed_authorization_moves_it_on_to_requires_capture() -> None:
    settled = verdict(MANUAL, report("payment_intent.amount_capturable_updated"),
                      State.REQUIRES_CAPTURE)  # fmt: skip
    assert (settled.state, settled.charge_id) == (State.REQUIRES_CAPTURE, "pi_1")
    assert emitted(settled)["type"] == "payment.requires_capture"


def authorize_command(attempt: int) -> Command:
    data = Authorize(amount=1999, currency="USD", payment_method="pm_card_threeDSecure2Required")
    return new_command(CommandType.AUTHORIZE, command_id=uuid.uuid4(), saga_id="payment:pay_1",
                       subject="pay_1", merchant_id="mer_1", data=data, correlation_id="corr_1",
                       attempt=attempt)  # fmt: skip


def test_an_authorization_waiting_for_its_customer_answers_with_what_they_must_do() -> None:
    action = NextAction("redirect_to_url", "https://hooks.stripe.com/3ds").shown()
    change = Change("payment_authorized", {}, action)
    reply = answer(authorize_command(1), MANUAL, change)
    assert reply is not None
    kind, data = reply
    assert kind is EventType.REQUIRES_ACTION
    assert data == RequiresAction(charge_id="pi_1", next_action=action)
    assert data.model_dump()["next_action"] == {
        "type": "redirect_to_url", "redirect_to_url": {"url": "https://hooks.stripe.com/3ds"},
    }  # fmt: skip
    # A resend meanwhile finds the payment waiting: nothing to answer (the first answer stands).
    assert answer(authorize_command(2), MANUAL, None) is None
