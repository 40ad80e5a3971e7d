"""The states the ledger keeps between batches: only what committed, only while its partitions'
cursors are where this process left them. Pure: no database, no Kafka."""

from __future__ import annotations

from workers.ledger.known_states import KnownStates
from workers.ledger.rules import Kind, PaymentState
from workers.ledger.store import Cursor

P0, P1 = ("payments", 0), ("payments", 1)
START = {P0: Cursor(0, 0, bytes(32)), P1: Cursor(0, 0, bytes(32))}
AFTER = {P0: Cursor(5, 3, b"a" * 32), P1: Cursor(7, 4, b"b" * 32)}
REFUNDED = PaymentState(refunded=100, references=frozenset({(Kind.REFUND, "re_1")}))
POSTED = PaymentState(resolution=Kind.POST, captured=500)


def committed_batch(known: KnownStates) -> None:
    """A batch that leaves pay_a (partition 0) refunded and pay_b (partition 1) posted."""
    known.begin()
    known.lookup(START, {"pay_a": P0, "pay_b": P1})
    known.stage({"pay_a": REFUNDED, "pay_b": POSTED}, {"pay_a": P0, "pay_b": P1}, AFTER)
    known.committed()


def test_a_committed_batch_s_states_are_known_to_the_next_batch() -> None:
    known = KnownStates()
    committed_batch(known)
    states, missing = known.lookup(AFTER, {"pay_a": P0, "pay_b": P1, "pay_new": P0})
    assert states == {"pay_a": REFUNDED, "pay_b": POSTED}
    assert missing == ["pay_new"]


def test_a_batch_that_did_not_commit_leaves_nothing() -> None:
    known = KnownStates()
    known.begin()
    known.lookup(START, {"pay_a": P0})
    known.stage({"pay_a": REFUNDED}, {"pay_a": P0}, AFTER)
    # Rolled back: the caller never says committed. The next batch has nothing to apply and
    # commits: nothing of the first is kept.
    known.begin()
    known.committed()
    assert len(known) == 0
    assert known.lookup(AFTER, {"pay_a": P0}) == ({}, ["pay_a"])


def test_a_partition_someone_else_wrote_forgets_every_state() -> None:
    known = KnownStates()
    committed_batch(known)
    # Partition 1 moved on without this process (another consumer held it for a while).
    moved = {P0: AFTER[P0], P1: Cursor(9, 5, b"c" * 32)}
    states, missing = known.lookup(moved, {"pay_a": P0, "pay_b": P1})
    assert states == {}
    assert sorted(missing) == ["pay_a", "pay_b"]
    # Nor do they come back once the cursors agree again.
    assert known.lookup(AFTER, {"pay_a": P0})[0] == {}


def test_a_state_is_known_only_for_the_partition_it_was_written_from() -> None:
    known = KnownStates()
    committed_batch(known)
    # pay_a's events now come from partition 1 (the topic was given more partitions).
    states, missing = known.lookup(AFTER, {"pay_a": P1})
    assert (states, missing) == ({}, ["pay_a"])


def test_the_oldest_states_go_first_beyond_the_limit() -> None:
    known = KnownStates(limit=2)
    cursors = dict(START)
    for n in range(3):
        known.begin()
        known.lookup(cursors, {f"pay_{n}": P0})
        cursors = {**cursors, P0: Cursor(n + 1, n + 1, bytes([n]) * 32)}
        known.stage({f"pay_{n}": POSTED}, {f"pay_{n}": P0}, cursors)
        known.committed()
    states, missing = known.lookup(cursors, {"pay_0": P0, "pay_1": P0, "pay_2": P0})
    assert set(states) == {"pay_1", "pay_2"}
    assert missing == ["pay_0"]
