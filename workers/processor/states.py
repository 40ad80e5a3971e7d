"""The payment state machine, pure: a table of allowed transitions and one function to apply one.

    initiated --start--> processing --succeed--> succeeded --refund_full--> refunded
                                    \\--fail----> failed     \\--refund_partial--> succeeded

A payment the customer must authenticate (3-D Secure) waits for them; the gateway's report
(``gateway.reported``) or the end of the wait (``processor.requires_action_timeout_s``) settles it::

    processing --require_action--> requires_action --succeed--> succeeded
                                                  \\--fail----> failed

Manual capture (the orchestrator's commands, ``workers.processor.captures``)::

    initiated --authorize--> requires_capture --capture--> succeeded
              \\--decline--> failed              \\--capture_fail--> failed
                                               \\--void--> canceled

An authorization the customer must authenticate (3-D Secure) waits for them as a charge does,
then goes on to be captured or canceled::

    initiated --require_action--> requires_action --authorize--> requires_capture
                                                  \\--fail----> failed

Every other move is impossible by construction; the database agrees, because each state change
is an ``UPDATE ... WHERE state = <expected>``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from workers.core.errors import FlowPayError


class State(StrEnum):
    INITIATED = "initiated"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"
    CANCELED = "canceled"


class Move(StrEnum):
    START = "start"
    REQUIRE_ACTION = "require_action"
    SUCCEED = "succeed"
    FAIL = "fail"
    REFUND_PARTIAL = "refund_partial"
    REFUND_FULL = "refund_full"
    AUTHORIZE = "authorize"
    DECLINE = "decline"
    CAPTURE = "capture"
    CAPTURE_FAIL = "capture_fail"
    VOID = "void"


TRANSITIONS: Final[dict[tuple[State, Move], State]] = {
    (State.INITIATED, Move.START): State.PROCESSING,
    (State.PROCESSING, Move.SUCCEED): State.SUCCEEDED,
    (State.PROCESSING, Move.FAIL): State.FAILED,
    (State.PROCESSING, Move.REQUIRE_ACTION): State.REQUIRES_ACTION,
    (State.REQUIRES_ACTION, Move.SUCCEED): State.SUCCEEDED,
    (State.REQUIRES_ACTION, Move.FAIL): State.FAILED,
    (State.SUCCEEDED, Move.REFUND_PARTIAL): State.SUCCEEDED,
    (State.SUCCEEDED, Move.REFUND_FULL): State.REFUNDED,
    (State.INITIATED, Move.AUTHORIZE): State.REQUIRES_CAPTURE,
    (State.INITIATED, Move.DECLINE): State.FAILED,
    (State.INITIATED, Move.REQUIRE_ACTION): State.REQUIRES_ACTION,
    (State.REQUIRES_ACTION, Move.AUTHORIZE): State.REQUIRES_CAPTURE,
    (State.REQUIRES_CAPTURE, Move.CAPTURE): State.SUCCEEDED,
    (State.REQUIRES_CAPTURE, Move.CAPTURE_FAIL): State.FAILED,
    (State.REQUIRES_CAPTURE, Move.VOID): State.CANCELED,
}


class InvalidTransition(FlowPayError):
    def __init__(self, state: State, move: Move) -> None:
        super().__init__(f"cannot {move} a payment that is {state}")
        self.state = state
        self.move = move


def apply(state: State, move: Move) -> State:
    """The state after ``move``; InvalidTransition if the table does not allow it."""
    try:
        return TRANSITIONS[(state, move)]
    except KeyError:
        raise InvalidTransition(state, move) from None


def reaches(state: State, to: State) -> bool:
    """Whether one move of the table takes a payment from ``state`` to ``to``."""
    return any(start is state and end is to for (start, _move), end in TRANSITIONS.items())


def refund_move(amount: int, refunded: int, refund: int) -> Move:
    """Which refund move ``refund`` minor units make; ValueError if more than is left."""
    left = amount - refunded
    if not 0 < refund <= left:
        raise ValueError(f"refund of {refund} with {left} left to refund")
    return Move.REFUND_FULL if refund == left else Move.REFUND_PARTIAL
