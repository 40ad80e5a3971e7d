"""Every saga FlowPay runs, declared as data: steps, commands, answers, timeouts, compensations.

A saga starts on the event that creates its subject (``starts_on``) and enters its first step.
A step either issues a command (``command``) and waits for one of the events that answer it,
or issues none and waits for a merchant's decision (``command`` None). Each answering event
names where the saga goes: another step (``Next``), the end (``End``), or back through what
it completed (``Compensate``): each completed step's ``compensation`` command, last first.
A step's ``timeout`` says which setting bounds its wait; ``on_timeout`` what happens then:
the command is sent again (same gateway idempotency keys, so never twice in effect), or the
saga compensates (an authorization that was never captured).

Nothing here does I/O: ``workers.orchestrator.machine`` walks these definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from workers.core.commands import CommandType
from workers.core.events import EventType


class SagaType(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"
    PAYOUT = "payout"


class SagaState(StrEnum):
    RUNNING = "running"  # a command is out, waiting for its answer
    WAITING = "waiting"  # waiting for a merchant's decision (and a timer)
    COMPENSATING = "compensating"  # undoing completed steps, last first
    DONE = "done"
    FAILED = "failed"


ENDED: Final = frozenset({SagaState.DONE, SagaState.FAILED})


class Timeout(StrEnum):
    """Which setting bounds a step's wait (``orchestrator.<name>_s``)."""

    COMMAND = "command_timeout"
    AUTHORIZATION = "authorization_ttl"


class OnTimeout(StrEnum):
    RESEND = "resend"
    COMPENSATE = "compensate"


@dataclass(frozen=True)
class Next:
    step: str


@dataclass(frozen=True)
class End:
    """The saga ends: ``done`` when it reached its goal, else ``failed``."""

    outcome: str
    state: SagaState = SagaState.DONE


@dataclass(frozen=True)
class Compensate:
    """Undo the completed steps, last first; then end ``failed`` with ``outcome``."""

    outcome: str


Transition = Next | End | Compensate


@dataclass(frozen=True)
class Compensation:
    """What undoes a completed step: a command, and the events that say it is undone."""

    command: CommandType
    answered_by: frozenset[EventType]


@dataclass(frozen=True)
class Step:
    name: str
    command: CommandType | None
    # The events that complete the step, and where each takes the saga.
    completes: Mapping[EventType, Transition]
    timeout: Timeout = Timeout.COMMAND
    on_timeout: OnTimeout = OnTimeout.RESEND
    compensation: Compensation | None = None


@dataclass(frozen=True)
class Saga:
    name: str
    type: SagaType
    starts_on: EventType
    steps: tuple[Step, ...]
    by_name: Mapping[str, Step] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {s.name: s for s in self.steps})

    @property
    def first(self) -> Step:
        return self.steps[0]

    def step(self, name: str) -> Step:
        return self.by_name[name]


_VOID = Compensation(CommandType.VOID, frozenset({EventType.CANCELED}))

# Automatic capture: one gateway charge, as merchants always had.
PAYMENT_AUTOMATIC: Final = Saga(
    "payment_automatic",
    SagaType.PAYMENT,
    EventType.INITIATED,
    (
        Step(
            "charge",
            CommandType.CHARGE,
            {
                EventType.SUCCEEDED: End("succeeded"),
                EventType.FAILED: End("failed", SagaState.FAILED),
            },
        ),
    ),
)

# Manual capture: authorize, then wait for the merchant's capture or cancel; an authorization
# left uncaptured past its TTL is voided (the payment canceled, "expired"). An authorization the
# customer must authenticate (3-D Secure) answers first with payment.requires_action, which
# answers no step: authorize waits on (a resend finds the payment waiting and is answered
# nothing) until the customer has authenticated (payment.requires_capture: the TTL starts
# then) or the processor gave up on them (payment.failed, action_expired: nothing was held).
PAYMENT_MANUAL: Final = Saga(
    "payment_manual",
    SagaType.PAYMENT,
    EventType.AUTHORIZATION_REQUESTED,
    (
        Step(
            "authorize",
            CommandType.AUTHORIZE,
            {
                EventType.REQUIRES_CAPTURE: Next("await_decision"),
                EventType.FAILED: End("failed", SagaState.FAILED),
            },
            compensation=_VOID,
        ),
        Step(
            "await_decision",
            None,
            {
                EventType.CAPTURE_REQUESTED: Next("capture"),
                EventType.CANCEL_REQUESTED: Next("cancel"),
            },
            timeout=Timeout.AUTHORIZATION,
            on_timeout=OnTimeout.COMPENSATE,
        ),
        Step(
            "capture",
            CommandType.CAPTURE,
            {
                EventType.SUCCEEDED: End("succeeded"),
                # A capture releases what it does not take (the command's contract): after a
                # refused one nothing is held, and there is nothing left to compensate.
                EventType.FAILED: End("failed", SagaState.FAILED),
            },
        ),
        Step("cancel", CommandType.VOID, {EventType.CANCELED: End("canceled")}),
    ),
)

# A refund of (part of) a succeeded payment; one saga per refund id.
REFUND: Final = Saga(
    "refund",
    SagaType.REFUND,
    EventType.REFUND_REQUESTED,
    (
        Step(
            "refund",
            CommandType.REFUND,
            {
                EventType.REFUNDED: End("refunded"),
                EventType.REFUND_FAILED: End("refund_failed", SagaState.FAILED),
            },
        ),
    ),
)

# A payout of a merchant's available balance. The reservation is made where it cannot race:
# the API takes the amount from its balance projection in the transaction that stages
# payout.requested, and the ledger books it pending (Dr merchant_payable, Cr
# payouts_in_transit) from that event. Then the gateway pays it out: payout.paid posts the
# reservation; payout.failed is the compensation, done by the services holding the reservation
# as they hear it (the ledger voids it, the API gives the amount back to available).
PAYOUT: Final = Saga(
    "payout",
    SagaType.PAYOUT,
    EventType.PAYOUT_REQUESTED,
    (
        Step(
            "send",
            CommandType.PAYOUT,
            {
                EventType.PAYOUT_PAID: End("paid"),
                EventType.PAYOUT_FAILED: End("failed", SagaState.FAILED),
            },
        ),
    ),
)

SAGAS: Final = (PAYMENT_AUTOMATIC, PAYMENT_MANUAL, REFUND, PAYOUT)
BY_NAME: Final = {s.name: s for s in SAGAS}
STARTED_BY: Final = {s.starts_on: s for s in SAGAS}
# The outcome of a saga whose expiry timer compensated it.
EXPIRED_OUTCOME: Final = "canceled"


def answering_events() -> frozenset[EventType]:
    """Every event some step or compensation waits for."""
    found: set[EventType] = set()
    for saga in SAGAS:
        for step in saga.steps:
            found |= set(step.completes)
            if step.compensation is not None:
                found |= step.compensation.answered_by
    return frozenset(found)
