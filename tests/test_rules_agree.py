"""Rules written twice, in Python and in SQL, kept equal: each pair gets the same answers.

(The status rules of ``workers.core.projection`` against the read model's statement are in
``test_read_model``.)
"""

from __future__ import annotations

import re

import pytest

from tests.helpers.db import Conn
from tests.test_ledger_support import ledger_thread, mixed, publish, quick, wait_consumed
from workers.core.config import Settings
from workers.core.status import PaymentStatus
from workers.ledger.rules import STANDARD_RULES, PaymentState, transaction_id
from workers.ledger.store import LedgerStore


@pytest.mark.parametrize(
    ("table", "constraint"),
    [
        ("api.payments", "payments_status_known"),
        ("processor.payments", "processor_payments_state_known"),
    ],
)
def test_the_schema_knows_exactly_the_payment_statuses(
    db: Conn, table: str, constraint: str
) -> None:
    row = db.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
        (constraint, table),
    ).fetchone()
    assert row is not None, f"{table} has no constraint {constraint}"
    assert set(re.findall(r"'([a-z_]+)'", row[0])) == {s.value for s in PaymentStatus}


def test_payment_states_in_memory_and_in_sql_agree(settings: Settings, db: Conn) -> None:
    scenario = mixed(30)
    sent = publish(quick(settings), scenario.events)
    with ledger_thread(quick(settings)):
        wait_consumed(db, sent)
    # PaymentState.after, folded over each payment's events as the rules post them.
    expected: dict[str, PaymentState] = {}
    for event in scenario.events:
        state = expected.get(event.payment_id, PaymentState())
        for index, transfer in enumerate(STANDARD_RULES.transfers(event, state)):
            state = state.after(transaction_id(event.event_id, index), transfer, event.merchant_id)
        expected[event.payment_id] = state
    # The payment_states query, over what the ledger wrote.
    with db.transaction():
        found = LedgerStore().payment_states(db, sorted(expected))
    assert found == expected
    assert any(s.refunded for s in found.values())
    assert any(s.references for s in found.values())
