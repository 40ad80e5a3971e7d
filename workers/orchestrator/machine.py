"""How a saga instance moves: pure functions from (instance, event or timer, now) to a decision.

``start`` begins a saga on the event that creates its subject; ``hear`` applies an event to a
running instance; ``fire`` applies a due timer. Each returns a ``Decision``: the instance as it
now stands, the step records to write, the commands to stage in the outbox, and the timer to
arm (the instance's armed timer, if any, is always disarmed first). The store writes decisions;
nothing here does I/O, so every path is tested without Kafka or PostgreSQL.

Command ids are derived from (saga, step number, attempt): a decision made twice (a redelivery
after a crash) stages the same command, which the outbox keeps once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from workers.core.commands import (
    Authorize,
    Capture,
    Charge,
    Command,
    CommandData,
    CommandType,
    Payout,
    Refund,
    Void,
    new_command,
)
from workers.core.events import (
    PAYOUT_EVENTS,
    CancelRequested,
    CaptureRequested,
    Event,
    EventType,
    Initiated,
    PayoutRequested,
    Refunded,
    RefundFailed,
    RefundRequested,
    RequiresCapture,
)
from workers.core.status import CancellationReason
from workers.orchestrator.sagas import (
    BY_NAME,
    EXPIRED_OUTCOME,
    STARTED_BY,
    Compensate,
    End,
    Next,
    OnTimeout,
    Saga,
    SagaState,
    SagaType,
    Step,
    Timeout,
    Transition,
)

_COMMAND_IDS: Final = uuid.UUID("5a6a0f1e-6b1d-4c55-9a43-0f6c0d3b8e11")


@dataclass(frozen=True)
class Timeouts:
    """The seconds each ``Timeout`` stands for (from ``orchestrator.*`` settings)."""

    command_timeout: float
    authorization_ttl: float

    def of(self, timeout: Timeout) -> timedelta:
        return timedelta(seconds=float(getattr(self, timeout.value)))


@dataclass(frozen=True)
class StepRecord:
    """One entry of an instance's history (a row of ``orchestrator.steps``)."""

    seq: int
    name: str
    compensation: bool
    command_type: CommandType | None
    command_id: uuid.UUID | None
    attempts: int
    entered_at: datetime
    sent_at: datetime | None
    answer_id: uuid.UUID | None = None
    answer_type: str | None = None
    answered_at: datetime | None = None


@dataclass(frozen=True)
class Instance:
    """A saga instance (a row of ``orchestrator.sagas``) and its current step's record."""

    id: str
    definition: str
    type: SagaType
    subject: str
    reference: str
    merchant_id: str
    correlation_id: str
    state: SagaState
    step: str
    completed: tuple[str, ...]
    context: Mapping[str, Any]
    outcome: str | None
    current: StepRecord

    @property
    def saga(self) -> Saga:
        return BY_NAME[self.definition]


@dataclass(frozen=True)
class TimerPlan:
    action: OnTimeout
    due_at: datetime


@dataclass(frozen=True)
class Decision:
    instance: Instance
    effect: str  # started, advanced or ignored (orchestrator.events' effect)
    detail: str | None = None
    steps: tuple[StepRecord, ...] = ()
    commands: tuple[Command, ...] = ()
    timer: TimerPlan | None = None

    @property
    def changed(self) -> bool:
        return self.effect != "ignored"


def saga_id(saga: Saga, event: Event) -> str:
    """One instance per payment (and per refund): a redelivered start finds it."""
    return f"{saga.type.value}:{_reference(saga, event) or event.payment_id}"


def key_of(event: Event) -> tuple[SagaType, str, str] | None:
    """(type, subject, reference) of the instance an event concerns; None for none."""
    data = event.data
    if isinstance(data, RefundRequested | Refunded | RefundFailed):
        return SagaType.REFUND, event.payment_id, data.refund_id
    if event.type in _PAYMENT_EVENTS:
        return SagaType.PAYMENT, event.payment_id, ""
    if event.type in PAYOUT_EVENTS:
        return SagaType.PAYOUT, event.payment_id, ""
    return None


_PAYMENT_EVENTS: Final = frozenset(
    {
        EventType.INITIATED,
        EventType.AUTHORIZATION_REQUESTED,
        EventType.REQUIRES_CAPTURE,
        EventType.CAPTURE_REQUESTED,
        EventType.CANCEL_REQUESTED,
        EventType.SUCCEEDED,
        EventType.FAILED,
        EventType.CANCELED,
    }
)


def start(event: Event, now: datetime, timeouts: Timeouts) -> Decision | None:
    """A new instance for an event that starts a saga (None for any other event)."""
    saga = STARTED_BY.get(event.type)
    if saga is None:
        return None
    first = saga.first
    blank = Instance(
        id=saga_id(saga, event),
        definition=saga.name,
        type=saga.type,
        subject=event.payment_id,
        reference=_reference(saga, event),
        merchant_id=event.merchant_id,
        correlation_id=event.correlation_id,
        state=SagaState.RUNNING,
        step=first.name,
        completed=(),
        context=_learned({}, event),
        outcome=None,
        current=StepRecord(0, "", False, None, None, 0, now, None),
    )
    entered = _enter(blank, first, now, timeouts, compensation=False)
    return replace(entered, effect="started")


def hear(instance: Instance, event: Event, now: datetime, timeouts: Timeouts) -> Decision:
    """What ``event`` does to ``instance``: advance it, or nothing (said why)."""
    if instance.state in (SagaState.DONE, SagaState.FAILED):
        return _ignored(instance, f"the saga has ended ({instance.state})")
    if instance.current.compensation:
        return _hear_compensation(instance, event, now, timeouts)
    step = instance.saga.step(instance.step)
    transition = step.completes.get(event.type)
    if transition is None:
        return _ignored(instance, f"{event.type} does not answer step {step.name}")
    answered = _answered(instance.current, event, now)
    moved = replace(instance, context=_learned(instance.context, event))
    decision = _take(moved, transition, now, timeouts)
    return replace(decision, steps=(answered, *decision.steps))


def fire(instance: Instance, step_seq: int, action: OnTimeout, now: datetime,
         timeouts: Timeouts) -> Decision:  # fmt: skip
    """A due timer armed at step ``step_seq``; a timer of a step the saga has left is stale."""
    if instance.current.seq != step_seq or instance.state in (SagaState.DONE, SagaState.FAILED):
        return _ignored(instance, "the timer's step is over")
    if action is OnTimeout.COMPENSATE:
        expired = dict(instance.context, cancellation_reason=CancellationReason.EXPIRED.value)
        return _compensate(replace(instance, context=expired), EXPIRED_OUTCOME, now, timeouts)
    return _resend(instance, now, timeouts)


def _take(instance: Instance, transition: Transition, now: datetime,
          timeouts: Timeouts) -> Decision:  # fmt: skip
    completed = (*instance.completed, instance.step)
    done = replace(instance, completed=completed)
    match transition:
        case Next(step):
            return _enter(done, instance.saga.step(step), now, timeouts, compensation=False)
        case End(outcome, state):
            ended = replace(done, state=state, outcome=outcome)
            return Decision(ended, "advanced", f"ended: {outcome}")
        case Compensate(outcome):
            return _compensate(done, outcome, now, timeouts)


def _compensate(instance: Instance, outcome: str, now: datetime,
                timeouts: Timeouts) -> Decision:  # fmt: skip
    """Undo the last completed step that has a compensation; end ``failed`` when none is left."""
    pending = dict(instance.context, compensated_outcome=outcome)
    instance = replace(instance, context=pending, state=SagaState.COMPENSATING)
    for index in range(len(instance.completed) - 1, -1, -1):
        step = instance.saga.step(instance.completed[index])
        if step.compensation is not None:
            left = replace(instance, completed=instance.completed[:index])
            return _enter(left, step, now, timeouts, compensation=True)
    ended = replace(instance, state=SagaState.FAILED, outcome=outcome)
    return Decision(ended, "advanced", f"compensated: {outcome}")


def _hear_compensation(instance: Instance, event: Event, now: datetime,
                       timeouts: Timeouts) -> Decision:  # fmt: skip
    compensation = instance.saga.step(instance.step).compensation
    assert compensation is not None  # a compensation step is entered only for one
    if event.type not in compensation.answered_by:
        return _ignored(instance, f"{event.type} does not answer undoing {instance.step}")
    answered = _answered(instance.current, event, now)
    outcome = str(instance.context.get("compensated_outcome", "failed"))
    decision = _compensate(instance, outcome, now, timeouts)
    return replace(decision, steps=(answered, *decision.steps))


def _enter(instance: Instance, step: Step, now: datetime, timeouts: Timeouts, *,
           compensation: bool) -> Decision:  # fmt: skip
    """Move to ``step`` (or to undoing it): issue its command and arm its timer."""
    command_type = step.compensation.command if compensation and step.compensation else step.command
    seq = instance.current.seq + 1
    commands: tuple[Command, ...] = ()
    if command_type is None:
        record = StepRecord(seq, step.name, compensation, None, None, 0, now, None)
        state = SagaState.WAITING
    else:
        commands = (_command(instance, command_type, seq, 1, now),)
        record = StepRecord(seq, step.name, compensation, command_type, commands[0].command_id,
                            1, now, now)  # fmt: skip
        state = SagaState.COMPENSATING if compensation else SagaState.RUNNING
    moved = replace(instance, step=step.name, state=state, current=record)
    # A compensation is sent again until it is answered, whatever the step's own timeout does.
    action = OnTimeout.RESEND if compensation else step.on_timeout
    timeout = Timeout.COMMAND if compensation else step.timeout
    timer = TimerPlan(action, now + timeouts.of(timeout))
    return Decision(moved, "advanced", f"entered {record.name}", (record,), commands, timer)


def _resend(instance: Instance, now: datetime, timeouts: Timeouts) -> Decision:
    record = instance.current
    if record.command_type is None:
        return _ignored(instance, "a wait has nothing to send again")
    attempt = record.attempts + 1
    command = _command(instance, record.command_type, record.seq, attempt, now)
    resent = replace(record, attempts=attempt, command_id=command.command_id, sent_at=now)
    timer = TimerPlan(OnTimeout.RESEND, now + timeouts.of(Timeout.COMMAND))
    moved = replace(instance, current=resent)
    return Decision(moved, "advanced", f"resent {record.command_type} (attempt {attempt})",
                    (resent,), (command,), timer)  # fmt: skip


def _answered(record: StepRecord, event: Event, now: datetime) -> StepRecord:
    return replace(record, answer_id=event.event_id, answer_type=event.type.value, answered_at=now)


def _ignored(instance: Instance, why: str) -> Decision:
    return Decision(instance, "ignored", why)


def command_id(saga: str, seq: int, attempt: int) -> uuid.UUID:
    return uuid.uuid5(_COMMAND_IDS, f"{saga}/{seq}/{attempt}")


def _command(instance: Instance, type_: CommandType, seq: int, attempt: int,
             now: datetime) -> Command:  # fmt: skip
    return new_command(
        type_,
        command_id=command_id(instance.id, seq, attempt),
        saga_id=instance.id,
        subject=instance.subject,
        merchant_id=instance.merchant_id,
        data=command_data(type_, instance.context),
        correlation_id=instance.correlation_id,
        attempt=attempt,
        issued_at=now,
    )


def command_data(type_: CommandType, context: Mapping[str, Any]) -> CommandData:
    """A command's payload, from what the saga learned from its events."""
    match type_:
        case CommandType.CHARGE:
            return Charge(amount=context["amount"], currency=context["currency"],
                          payment_method=context["payment_method"])  # fmt: skip
        case CommandType.AUTHORIZE:
            return Authorize(amount=context["amount"], currency=context["currency"],
                             payment_method=context["payment_method"])  # fmt: skip
        case CommandType.CAPTURE:
            return Capture(amount_to_capture=context["amount_to_capture"])
        case CommandType.VOID:
            reason = context.get("cancellation_reason", CancellationReason.ABANDONED.value)
            return Void(cancellation_reason=CancellationReason(reason))
        case CommandType.REFUND:
            return Refund(refund_id=context["refund_id"], amount=context["refund_amount"])
        case CommandType.PAYOUT:
            return Payout(amount=context["amount"], currency=context["currency"],
                          destination=context.get("destination"))  # fmt: skip


def _learned(context: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """The context with what ``event`` tells the saga's later commands."""
    data = event.data
    learned = dict(context)
    if isinstance(data, Initiated):
        learned.update(amount=data.amount, currency=data.currency,
                       payment_method=data.payment_method)  # fmt: skip
    elif isinstance(data, PayoutRequested):
        learned.update(amount=data.amount, currency=data.currency, destination=data.destination)
    elif isinstance(data, RefundRequested):
        learned.update(refund_id=data.refund_id, refund_amount=data.amount)
    elif isinstance(data, RequiresCapture):
        learned.update(amount_capturable=data.amount_capturable,
                       authorization_id=data.authorization_id)  # fmt: skip
    elif isinstance(data, CaptureRequested):
        learned.update(amount_to_capture=data.amount_to_capture)
    elif isinstance(data, CancelRequested):
        learned.update(cancellation_reason=data.cancellation_reason.value)
    return learned


def _reference(saga: Saga, event: Event) -> str:
    data = event.data
    return (
        data.refund_id if saga.type is SagaType.REFUND and isinstance(data, RefundRequested) else ""
    )


@dataclass(frozen=True)
class Heard:
    """What the orchestrator did with one event (a row of ``orchestrator.events``)."""

    event: Event
    saga_id: str | None
    effect: str
    detail: str | None


SagaKey = tuple[SagaType, str, str]


def walk(
    events: Sequence[Event],
    instances: Mapping[SagaKey, Instance],
    now: datetime,
    timeouts: Timeouts,
) -> tuple[list[Decision], list[Heard]]:
    """A batch's events (in order per payment) through the instances they concern: the
    decisions that change something, in order, and what was done with every event."""
    known = dict(instances)
    decisions: list[Decision] = []
    heard: list[Heard] = []
    for event in events:
        key = key_of(event)
        current = known.get(key) if key is not None else None
        if current is None:
            decision = start(event, now, timeouts)
        elif event.type in STARTED_BY:
            decision = _ignored(current, "the saga has started already")
        else:
            decision = hear(current, event, now, timeouts)
        if decision is None:
            heard.append(Heard(event, None, "ignored", "no saga is waiting for it"))
            continue
        heard.append(Heard(event, decision.instance.id, decision.effect, decision.detail))
        if decision.changed:
            decisions.append(decision)
            instance = decision.instance
            known[(instance.type, instance.subject, instance.reference)] = instance
    return decisions, heard
