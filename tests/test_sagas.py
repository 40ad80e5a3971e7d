"""The sagas as data and the machine that walks them: pure, no Kafka, no PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workers.core.commands import Capture, CommandType, Payout, Void
from workers.core.events import (
    Canceled,
    CancelRequested,
    CaptureRequested,
    EventData,
    EventType,
    Failed,
    Initiated,
    NextAction,
    PayoutFailed,
    PayoutPaid,
    PayoutRequested,
    Processing,
    RedirectToUrl,
    Refunded,
    RefundRequested,
    RequiresAction,
    RequiresCapture,
    Succeeded,
    new_event,
)
from workers.core.status import CancellationReason
from workers.orchestrator import machine
from workers.orchestrator.machine import Decision, Instance, Timeouts
from workers.orchestrator.sagas import (
    SAGAS,
    Compensate,
    End,
    Next,
    OnTimeout,
    SagaState,
    SagaType,
    answering_events,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUTS = Timeouts(command_timeout=60.0, authorization_ttl=3600.0)
PAY = "pay_1"


def event(type_: EventType, data: EventData, payment_id: str = PAY):  # type: ignore[no-untyped-def]
    return new_event(type_, payment_id=payment_id, merchant_id="m_1", data=data, source="test")


def initiated(type_: EventType = EventType.INITIATED):  # type: ignore[no-untyped-def]
    data = Initiated(amount=1000, currency="EUR", payment_method="pm_card_visa")
    return event(type_, data)


def started(type_: EventType) -> Decision:
    decision = machine.start(initiated(type_), T0, TIMEOUTS)
    assert decision is not None
    return decision


def hear(instance: Instance, type_: EventType, data: EventData, at: datetime = T0) -> Decision:
    return machine.hear(instance, event(type_, data), at, TIMEOUTS)


def authorized() -> Instance:
    saga = started(EventType.AUTHORIZATION_REQUESTED).instance
    data = RequiresCapture(authorization_id="auth_1", amount_capturable=1000)
    return hear(saga, EventType.REQUIRES_CAPTURE, data).instance


def test_every_declared_transition_names_a_step_of_its_saga() -> None:
    for saga in SAGAS:
        names = {s.name for s in saga.steps}
        assert len(names) == len(saga.steps), saga.name
        for step in saga.steps:
            for transition in step.completes.values():
                assert isinstance(transition, Next | End | Compensate)
                if isinstance(transition, Next):
                    assert transition.step in names, (saga.name, step.name)


def test_every_command_is_answered_by_events_its_steps_wait_for() -> None:
    from workers.core.commands import ANSWERS

    for saga in SAGAS:
        for step in saga.steps:
            if step.command is not None:
                assert set(step.completes) <= ANSWERS[step.command], (saga.name, step.name)
            if step.compensation is not None:
                assert step.compensation.answered_by <= ANSWERS[step.compensation.command]
    assert EventType.PROCESSING not in answering_events()


def test_an_automatic_payment_issues_one_charge_and_arms_its_resend() -> None:
    decision = started(EventType.INITIATED)
    saga = decision.instance
    assert (saga.id, saga.type, saga.state, saga.step) == (
        f"payment:{PAY}", SagaType.PAYMENT, SagaState.RUNNING, "charge",
    )  # fmt: skip
    [command] = decision.commands
    assert command.type is CommandType.CHARGE
    assert (command.subject, command.saga_id, command.attempt) == (PAY, saga.id, 1)
    assert decision.timer == machine.TimerPlan(OnTimeout.RESEND, T0 + timedelta(seconds=60))
    done = hear(saga, EventType.SUCCEEDED, Succeeded(charge_id="ch_1"))
    assert (done.instance.state, done.instance.outcome) == (SagaState.DONE, "succeeded")
    assert done.steps[0].answer_type == "payment.succeeded"
    assert not done.commands
    assert done.timer is None


def test_a_declined_charge_fails_the_saga() -> None:
    saga = started(EventType.INITIATED).instance
    failed = hear(saga, EventType.FAILED, Failed(reason="card_declined")).instance
    assert (failed.state, failed.outcome) == (SagaState.FAILED, "failed")


def test_the_same_start_twice_gives_the_same_saga_and_command_ids() -> None:
    first, again = initiated(), initiated()
    again = again.model_copy(update={"payment_id": first.payment_id})
    one = machine.start(first, T0, TIMEOUTS)
    two = machine.start(again, T0 + timedelta(seconds=5), TIMEOUTS)
    assert one is not None
    assert two is not None
    assert one.instance.id == two.instance.id
    assert one.commands[0].command_id == two.commands[0].command_id


def test_manual_capture_waits_for_the_merchant_then_captures_what_was_asked() -> None:
    saga = authorized()
    assert (saga.state, saga.step, saga.context["amount_capturable"]) == (
        SagaState.WAITING, "await_decision", 1000,
    )  # fmt: skip
    capture = hear(saga, EventType.CAPTURE_REQUESTED, CaptureRequested(amount_to_capture=600))
    [command] = capture.commands
    assert command.type is CommandType.CAPTURE
    assert command.data == Capture(amount_to_capture=600)
    assert capture.instance.completed == ("authorize", "await_decision")
    done = hear(
        capture.instance, EventType.SUCCEEDED, Succeeded(charge_id="ch", amount_captured=600)
    )
    assert (done.instance.state, done.instance.outcome) == (SagaState.DONE, "succeeded")


def test_a_waiting_authorization_arms_its_expiry_at_the_ttl() -> None:
    saga = started(EventType.AUTHORIZATION_REQUESTED).instance
    data = RequiresCapture(authorization_id="auth_1", amount_capturable=1000)
    waiting = hear(saga, EventType.REQUIRES_CAPTURE, data, at=T0 + timedelta(seconds=1))
    assert not waiting.commands
    assert waiting.timer == machine.TimerPlan(
        OnTimeout.COMPENSATE, T0 + timedelta(seconds=1 + 3600)
    )


def test_a_cancel_voids_with_the_merchants_reason() -> None:
    reason = CancellationReason.REQUESTED_BY_CUSTOMER
    cancel = hear(
        authorized(), EventType.CANCEL_REQUESTED, CancelRequested(cancellation_reason=reason)
    )
    [command] = cancel.commands
    assert command.type is CommandType.VOID
    assert command.data == Void(cancellation_reason=reason)
    done = hear(cancel.instance, EventType.CANCELED, Canceled(cancellation_reason=reason))
    assert (done.instance.state, done.instance.outcome) == (SagaState.DONE, "canceled")


def test_an_expired_authorization_is_voided_as_a_compensation() -> None:
    saga = authorized()
    expired = machine.fire(saga, saga.current.seq, OnTimeout.COMPENSATE, T0, TIMEOUTS)
    assert expired.instance.state is SagaState.COMPENSATING
    assert expired.steps[0].compensation
    assert expired.steps[0].name == "authorize"
    [command] = expired.commands
    assert command.data == Void(cancellation_reason=CancellationReason.EXPIRED)
    assert expired.timer is not None
    assert expired.timer.action is OnTimeout.RESEND
    # A merchant's capture arriving after the expiry is no answer to the void.
    late = hear(
        expired.instance, EventType.CAPTURE_REQUESTED, CaptureRequested(amount_to_capture=1)
    )
    assert not late.changed
    voided = Canceled(cancellation_reason=CancellationReason.EXPIRED)
    done = hear(expired.instance, EventType.CANCELED, voided).instance
    assert (done.state, done.outcome) == (SagaState.FAILED, "canceled")


def test_a_failed_capture_ends_the_saga_failed_waiting_for_nothing() -> None:
    # The capture released the hold it did not take (the processor voids it before it answers
    # payment.failed): a void sent after it would wait for an answer that never comes.
    saga = authorized()
    capture = hear(saga, EventType.CAPTURE_REQUESTED, CaptureRequested(amount_to_capture=1000))
    failed = hear(capture.instance, EventType.FAILED, Failed(reason="gateway_error"))
    assert failed.commands == ()
    assert failed.timer is None
    assert (failed.instance.state, failed.instance.outcome) == (SagaState.FAILED, "failed")


def test_a_resend_is_a_new_attempt_of_the_same_command() -> None:
    saga = started(EventType.INITIATED).instance
    resent = machine.fire(saga, saga.current.seq, OnTimeout.RESEND, T0, TIMEOUTS)
    [command] = resent.commands
    assert command.attempt == 2
    assert command.type is CommandType.CHARGE
    assert command.command_id != saga.current.command_id
    assert resent.instance.current.attempts == 2
    assert resent.timer is not None


def test_a_stale_timer_and_an_ended_saga_change_nothing() -> None:
    saga = authorized()
    stale = machine.fire(saga, saga.current.seq - 1, OnTimeout.RESEND, T0, TIMEOUTS)
    assert not stale.changed
    assert not stale.commands
    done = hear(
        started(EventType.INITIATED).instance, EventType.SUCCEEDED, Succeeded(charge_id="c")
    )
    again = hear(done.instance, EventType.FAILED, Failed(reason="card_declined"))
    assert not again.changed
    assert again.instance == done.instance


@pytest.mark.parametrize("type_", [EventType.PROCESSING, EventType.CANCELED])
def test_an_event_that_does_not_answer_the_step_is_ignored(type_: EventType) -> None:
    saga = started(EventType.INITIATED).instance
    data: EventData = (
        Processing() if type_ is EventType.PROCESSING else Canceled(cancellation_reason="expired")
    )
    decision = hear(saga, type_, data)
    assert not decision.changed
    assert decision.instance == saga


def test_a_refund_is_a_saga_of_its_own_keyed_by_its_refund_id() -> None:
    request = event(EventType.REFUND_REQUESTED, RefundRequested(refund_id="re_1", amount=300))
    decision = machine.start(request, T0, TIMEOUTS)
    assert decision is not None
    saga = decision.instance
    assert (saga.id, saga.reference, saga.type) == ("refund:re_1", "re_1", SagaType.REFUND)
    assert machine.key_of(request) == (SagaType.REFUND, PAY, "re_1")
    [command] = decision.commands
    assert command.type is CommandType.REFUND
    refunded = Refunded(refund_id="re_1", amount=300, refunded_total=300)
    done = hear(saga, EventType.REFUNDED, refunded).instance
    assert (done.state, done.outcome) == (SagaState.DONE, "refunded")


def test_a_batch_walks_each_payments_events_in_order_through_one_instance() -> None:
    start = initiated()
    answer = event(EventType.SUCCEEDED, Succeeded(charge_id="ch_1"))
    stray = event(EventType.SUCCEEDED, Succeeded(charge_id="ch_2"), payment_id="pay_unknown")
    decisions, heard = machine.walk([start, start, answer, stray], {}, T0, TIMEOUTS)
    assert [(h.effect, h.saga_id) for h in heard] == [
        ("started", f"payment:{PAY}"),
        ("ignored", f"payment:{PAY}"),
        ("advanced", f"payment:{PAY}"),
        ("ignored", None),
    ]
    assert [d.instance.state for d in decisions] == [SagaState.RUNNING, SagaState.DONE]


def test_an_authorization_through_3d_secure_waits_then_goes_on_to_the_merchants_decision() -> None:
    start = initiated(EventType.AUTHORIZATION_REQUESTED)
    shown = NextAction(type="redirect_to_url",
                       redirect_to_url=RedirectToUrl(url="https://hooks.stripe.com/3ds"))  # fmt: skip
    waiting = event(EventType.REQUIRES_ACTION, RequiresAction(charge_id="pi_1", next_action=shown))
    held = event(EventType.REQUIRES_CAPTURE,
                 RequiresCapture(authorization_id="pi_1", amount_capturable=1000))  # fmt: skip
    decisions, heard = machine.walk([start, waiting], {}, T0, TIMEOUTS)
    # The customer's authentication answers nothing: the authorize step waits on.
    assert [h.effect for h in heard] == ["started", "ignored"]
    [begun] = decisions
    assert (begun.instance.state, begun.instance.step) == (SagaState.RUNNING, "authorize")
    # Its resend, while the customer is away, asks for the same authorization (the processor
    # finds the payment waiting and answers nothing).
    resent = machine.fire(begun.instance, begun.instance.current.seq, OnTimeout.RESEND,
                          T0 + timedelta(seconds=60), TIMEOUTS)  # fmt: skip
    [again] = resent.commands
    assert (again.type, again.attempt) == (CommandType.AUTHORIZE, 2)
    # Authenticated, the hold waits for the merchant with its expiry armed from then.
    later = T0 + timedelta(seconds=90)
    decided = machine.hear(resent.instance, held, later, TIMEOUTS)
    assert (decided.instance.state, decided.instance.step) == (SagaState.WAITING, "await_decision")
    assert decided.timer == machine.TimerPlan(OnTimeout.COMPENSATE, later + timedelta(seconds=3600))
    assert decided.steps[0].answer_type == "payment.requires_capture"


def test_an_authorization_whose_customer_never_authenticates_ends_failed() -> None:
    saga = started(EventType.AUTHORIZATION_REQUESTED).instance
    expired = hear(saga, EventType.FAILED, Failed(reason="action_expired"))
    assert (expired.instance.state, expired.instance.outcome) == (SagaState.FAILED, "failed")
    assert not expired.commands  # nothing was authorized: nothing to void


def payout_started() -> Decision:
    request = event(EventType.PAYOUT_REQUESTED, PayoutRequested(amount=700, currency="EUR"), "po_1")
    decision = machine.start(request, T0, TIMEOUTS)
    assert decision is not None
    return decision


def test_a_payout_is_sent_through_the_gateway_once_reserved_and_ends_paid() -> None:
    decision = payout_started()
    saga = decision.instance
    assert (saga.id, saga.type, saga.state, saga.step) == (
        "payout:po_1", SagaType.PAYOUT, SagaState.RUNNING, "send",
    )  # fmt: skip
    [command] = decision.commands
    assert (command.type, command.subject) == (CommandType.PAYOUT, "po_1")
    assert command.data == Payout(amount=700, currency="EUR")
    assert decision.timer is not None
    assert decision.timer.action is OnTimeout.RESEND
    paid = machine.hear(
        saga, event(EventType.PAYOUT_PAID, PayoutPaid(gateway_payout_id="po_g", amount=700), "po_1"),
        T0, TIMEOUTS,
    )  # fmt: skip
    assert (paid.instance.state, paid.instance.outcome) == (SagaState.DONE, "paid")
    assert paid.commands == ()


def test_a_failed_payout_ends_failed_and_a_resend_asks_for_the_same_payout() -> None:
    saga = payout_started().instance
    resent = machine.fire(saga, saga.current.seq, OnTimeout.RESEND, T0, TIMEOUTS)
    [again] = resent.commands
    assert (again.attempt, again.data) == (2, Payout(amount=700, currency="EUR"))
    failed = machine.hear(
        resent.instance, event(EventType.PAYOUT_FAILED, PayoutFailed(reason="payout_refused"), "po_1"),
        T0, TIMEOUTS,
    )  # fmt: skip
    assert (failed.instance.state, failed.instance.outcome) == (SagaState.FAILED, "failed")
    assert failed.commands == ()
    assert failed.timer is None


def test_a_payment_event_never_reaches_a_payout_saga_of_the_same_id() -> None:
    saga = payout_started().instance
    key = machine.key_of(event(EventType.SUCCEEDED, Succeeded(charge_id="c"), "po_1"))
    assert key is not None
    assert key[0] is SagaType.PAYMENT
    assert machine.key_of(event(EventType.PAYOUT_PAID, PayoutPaid(gateway_payout_id="g", amount=1), "po_1")) == (
        SagaType.PAYOUT, "po_1", "",
    )  # fmt: skip
    assert saga.type is SagaType.PAYOUT
