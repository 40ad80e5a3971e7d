"""The applier against the real ledger schema: what it keeps between batches never outlives a
write by someone else. Two appliers take turns on one partition, as two consumers do when the
partition moves between them and back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.messages import received
from tests.test_ledger_support import ev
from workers.core.config import Settings
from workers.core.consuming import Received
from workers.core.db import connect
from workers.core.events import EventType, Initiated, Processing, Refunded, Succeeded
from workers.ledger.applier import Applier
from workers.ledger.rules import STANDARD_RULES
from workers.ledger.store import Conn, LedgerStore

INIT = Initiated(amount=1000, currency="USD", payment_method="pm_card_visa")


@pytest.fixture
def ledger_conn(settings: Settings) -> Iterator[Conn]:
    with connect(settings, "ledger", autocommit=True) as conn:
        yield conn


def apply(applier: Applier, conn: Conn, items: list[Received], dead: list[Any]) -> None:
    """One batch as run-ledger applies it: cursors locked, the batch, commit, then told."""
    with conn.transaction():
        cursors = applier.store.lock_cursors(conn, {item.partition for item in items})
        applier.apply(conn, items, cursors, lambda message, exc: dead.append(exc))
    applier.committed()


def test_a_state_kept_between_batches_gives_way_to_another_consumer_s_write(
    ledger_conn: Conn,
) -> None:
    one = Applier(LedgerStore(), STANDARD_RULES, max_attempts=3)
    two = Applier(LedgerStore(), STANDARD_RULES, max_attempts=3)
    dead: list[Any] = []
    refund = EventType.REFUNDED
    apply(one, ledger_conn, [
        received(0, 0, ev(EventType.INITIATED, "pay_1", INIT)),
        received(0, 1, ev(EventType.PROCESSING, "pay_1", Processing())),
        received(0, 2, ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch_1"))),
    ], dead)  # fmt: skip
    assert len(one.known) == 1  # pay_1 as posted, refunded 0
    # The partition moves to the other consumer, which refunds 600 of the 1,000...
    apply(two, ledger_conn, [
        received(0, 3, ev(refund, "pay_1", Refunded(refund_id="re_1", amount=600, refunded_total=600))),
    ], dead)  # fmt: skip
    # ...and back: the first must see those 600, not what it kept (nothing refunded).
    apply(one, ledger_conn, [
        received(0, 4, ev(refund, "pay_1", Refunded(refund_id="re_2", amount=500, refunded_total=1100))),
    ], dead)  # fmt: skip
    assert [type(exc).__name__ for exc in dead] == ["PostingRefused"]
    assert "with 400 left" in str(dead[0])
    refunded = ledger_conn.execute(
        "SELECT coalesce(sum(e.amount), 0) FROM ledger.entries e"
        " JOIN ledger.transactions t ON t.id = e.txn_id"
        " WHERE t.kind = 'refund' AND e.direction = 'debit'"
    ).fetchone()
    assert refunded == (600,)


def test_a_state_kept_between_batches_spares_the_database_the_question(
    ledger_conn: Conn,
) -> None:
    applier = Applier(LedgerStore(), STANDARD_RULES, max_attempts=3)
    asked: list[list[str]] = []
    payment_states = applier.store.payment_states

    def counted(conn: Conn, payment_ids: list[str]) -> Any:
        asked.append(payment_ids)
        return payment_states(conn, payment_ids)

    applier.store.payment_states = counted  # type: ignore[method-assign]
    dead: list[Any] = []
    apply(applier, ledger_conn, [received(0, 0, ev(EventType.INITIATED, "pay_1", INIT))], dead)
    apply(applier, ledger_conn, [
        received(0, 1, ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch_1"))),
        received(0, 2, ev(EventType.INITIATED, "pay_2", INIT)),
    ], dead)  # fmt: skip
    assert asked == [["pay_1"], ["pay_2"]]
    assert dead == []
