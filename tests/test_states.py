from __future__ import annotations

import itertools

import pytest

from workers.processor.states import TRANSITIONS, InvalidTransition, Move, State, apply, refund_move

ALLOWED = {
    (State.INITIATED, Move.START): State.PROCESSING,
    (State.PROCESSING, Move.SUCCEED): State.SUCCEEDED,
    (State.PROCESSING, Move.FAIL): State.FAILED,
    # 3-D Secure: the customer's action, then the gateway's report or the wait's end.
    (State.PROCESSING, Move.REQUIRE_ACTION): State.REQUIRES_ACTION,
    (State.REQUIRES_ACTION, Move.SUCCEED): State.SUCCEEDED,
    (State.REQUIRES_ACTION, Move.FAIL): State.FAILED,
    (State.SUCCEEDED, Move.REFUND_PARTIAL): State.SUCCEEDED,
    (State.SUCCEEDED, Move.REFUND_FULL): State.REFUNDED,
    # Manual capture, as the orchestrator's commands drive it.
    (State.INITIATED, Move.AUTHORIZE): State.REQUIRES_CAPTURE,
    (State.INITIATED, Move.DECLINE): State.FAILED,
    (State.REQUIRES_CAPTURE, Move.CAPTURE): State.SUCCEEDED,
    (State.REQUIRES_CAPTURE, Move.CAPTURE_FAIL): State.FAILED,
    (State.REQUIRES_CAPTURE, Move.VOID): State.CANCELED,
    # Manual capture with 3-D Secure: the customer authenticates, then the hold is captured or
    # canceled as any other (or the wait ends: fail).
    (State.INITIATED, Move.REQUIRE_ACTION): State.REQUIRES_ACTION,
    (State.REQUIRES_ACTION, Move.AUTHORIZE): State.REQUIRES_CAPTURE,
}


@pytest.mark.parametrize(("state", "move"), list(ALLOWED))
def test_every_allowed_transition(state: State, move: Move) -> None:
    assert apply(state, move) is ALLOWED[(state, move)]


@pytest.mark.parametrize(
    ("state", "move"), [p for p in itertools.product(State, Move) if p not in ALLOWED]
)
def test_every_other_transition_is_refused(state: State, move: Move) -> None:
    with pytest.raises(InvalidTransition):
        apply(state, move)


def test_the_table_is_exactly_the_documented_machine() -> None:
    assert TRANSITIONS == ALLOWED


def test_terminal_states_have_no_way_out_but_refunds() -> None:
    for state in (State.FAILED, State.REFUNDED, State.CANCELED):
        assert not [m for (s, m) in TRANSITIONS if s is state]


@pytest.mark.parametrize(
    ("amount", "refunded", "refund", "move"),
    [
        (1000, 0, 400, Move.REFUND_PARTIAL),
        (1000, 400, 600, Move.REFUND_FULL),
        (1000, 0, 1000, Move.REFUND_FULL),
    ],
)
def test_refund_move_by_what_is_left(amount: int, refunded: int, refund: int, move: Move) -> None:
    assert refund_move(amount, refunded, refund) is move


@pytest.mark.parametrize(("refunded", "refund"), [(0, 1001), (600, 500), (0, 0), (1000, 1)])
def test_refund_beyond_what_is_left_is_refused(refunded: int, refund: int) -> None:
    with pytest.raises(ValueError, match="left to refund"):
        refund_move(1000, refunded, refund)


def test_the_processor_states_are_payment_statuses() -> None:
    from workers.core.status import PaymentStatus

    assert {s.value for s in State} == {s.value for s in PaymentStatus}
