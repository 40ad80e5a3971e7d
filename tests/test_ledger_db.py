"""What PostgreSQL itself refuses, whatever the application does: raw SQL against the schema."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.helpers.db import Conn
from workers.core.db import mapped_errors
from workers.core.errors import ConstraintViolation
from workers.ledger.chain import GENESIS

ZERO = GENESIS


def account(db: Conn, account_id: str, code: str, side: str, merchant: str | None = None) -> None:
    db.execute(
        "INSERT INTO ledger.accounts (id, code, merchant_id, currency, normal_side)"
        " VALUES (%s, %s, %s, 'USD', %s) ON CONFLICT DO NOTHING",
        (account_id, code, merchant, side),
    )


def event(db: Conn, offset: int) -> uuid.UUID:
    event_id = uuid.uuid4()
    db.execute(
        "INSERT INTO ledger.events (event_id, type, payment_id, merchant_id, outcome,"
        " source_topic, source_partition, source_offset)"
        " VALUES (%s, 'payment.initiated', %s, 'mer_a', 'posted', 't', 0, %s)",
        (event_id, f"pay_{offset}", offset),
    )
    return event_id


def transaction(
    db: Conn, offset: int, kind: str = "authorize", pending_of: uuid.UUID | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    event_id = event(db, offset)
    txn = uuid.uuid4()
    db.execute(
        "INSERT INTO ledger.transactions (id, kind, payment_id, merchant_id, pending_of, event_id,"
        " source_topic, source_partition, source_offset, seq, prev_hash, hash)"
        " VALUES (%s, %s, %s, 'mer_a', %s, %s, 't', 0, %s, %s, %s, %s)",
        (txn, kind, f"pay_{offset}", pending_of, event_id, offset, offset + 1, ZERO, ZERO),
    )
    return txn, event_id


def entries(
    db: Conn, txn: uuid.UUID, event_id: uuid.UUID, offset: int, *lines: tuple[str, str, int]
) -> None:
    for n, (account_id, direction, amount) in enumerate(lines, start=1):
        db.execute(
            "INSERT INTO ledger.entries (txn_id, line, account_id, direction, phase, amount, currency,"
            " event_id, source_topic, source_partition, source_offset)"
            " VALUES (%s, %s, %s, %s, 'pending', %s, 'USD', %s, 't', 0, %s)",
            (txn, n, account_id, direction, amount, event_id, offset),
        )


@pytest.fixture
def accounts(db: Conn) -> Conn:
    account(db, "gateway_receivable:USD", "gateway_receivable", "debit")
    account(db, "merchant_payable:mer_a:USD", "merchant_payable", "credit", "mer_a")
    return db


GR, MP = "gateway_receivable:USD", "merchant_payable:mer_a:USD"


def write(
    db: Conn, offset: int, *lines: tuple[str, str, int], entry_offset: int | None = None
) -> uuid.UUID:
    """One transaction with ``lines``, committed (or refused) as one database transaction."""
    with db.transaction():
        txn, event_id = transaction(db, offset)
        at = offset if entry_offset is None else entry_offset
        entries(db, txn, event_id, at, *lines)
    return txn


def post(db: Conn, offset: int, debit: int, credit: int) -> uuid.UUID:
    return write(db, offset, (GR, "debit", debit), (MP, "credit", credit))


def test_a_balanced_transaction_commits_and_balances_follow_its_entries(accounts: Conn) -> None:
    post(accounts, 0, 700, 700)
    rows = accounts.execute(
        "SELECT account_id, debits, credits FROM ledger.balances ORDER BY 1"
    ).fetchall()
    assert rows == [(GR, 700, 0), (MP, 0, 700)]


def test_an_unbalanced_transaction_is_refused_at_commit(accounts: Conn) -> None:
    with pytest.raises(ConstraintViolation) as refused, mapped_errors():
        post(accounts, 0, 700, 699)
    assert refused.value.constraint == "ledger_transaction_balanced"
    assert "does not balance in USD/pending" in str(refused.value.__cause__)
    assert accounts.execute("SELECT count(*) FROM ledger.entries").fetchone() == (0,)
    assert accounts.execute("SELECT count(*) FROM ledger.balances").fetchone() == (0,)


def test_the_check_is_deferred_to_commit_not_made_per_statement(accounts: Conn) -> None:
    with accounts.transaction():
        txn, event_id = transaction(accounts, 0)
        entries(accounts, txn, event_id, 0, (GR, "debit", 5))  # unbalanced for a moment
        accounts.execute(
            "INSERT INTO ledger.entries VALUES (%s, 2, %s, 'credit', 'pending', 5, 'USD', %s, 't', 0, 0)",
            (txn, MP, event_id),
        )
    assert accounts.execute("SELECT count(*) FROM ledger.entries").fetchone() == (2,)


@pytest.mark.parametrize("lines", [[], [(GR, "debit", 10)]])
def test_a_transaction_with_fewer_than_two_entries_is_refused(
    accounts: Conn, lines: list[Any]
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="it needs two or more"):
        write(accounts, 0, *lines)


@pytest.mark.parametrize("amount", [0, -5])
def test_entries_carry_a_positive_amount(accounts: Conn, amount: int) -> None:
    with pytest.raises(ConstraintViolation) as refused, mapped_errors():
        post(accounts, 0, amount, amount)
    assert refused.value.constraint == "entries_amount_positive"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.entries SET amount = amount + 1",
        "DELETE FROM ledger.entries",
        "UPDATE ledger.transactions SET kind = 'refund'",
        "DELETE FROM ledger.transactions",
        "TRUNCATE ledger.entries CASCADE",
        "TRUNCATE ledger.transactions CASCADE",
        "UPDATE ledger.events SET amount = 1",
        "DELETE FROM ledger.accounts",
    ],
)
def test_entries_and_transactions_can_be_neither_updated_nor_deleted(
    accounts: Conn, statement: str
) -> None:
    post(accounts, 0, 700, 700)
    with pytest.raises(ConstraintViolation) as refused, mapped_errors():
        accounts.execute(statement)
    assert refused.value.constraint == "ledger_append_only"
    assert accounts.execute("SELECT sum(amount) FROM ledger.entries").fetchone() == (1400,)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.balances SET debits = 0",
        "DELETE FROM ledger.balances",
        "INSERT INTO ledger.balances (account_id, phase, debits) VALUES ('gateway_receivable:USD', 'posted', 1)",
    ],
)
def test_balances_are_written_by_the_entries_trigger_only(accounts: Conn, statement: str) -> None:
    post(accounts, 0, 700, 700)
    with pytest.raises(ConstraintViolation) as refused, mapped_errors():
        accounts.execute(statement)
    assert refused.value.constraint == "ledger_balances_derived"


def test_a_pending_transfer_is_resolved_at_most_once(accounts: Conn) -> None:
    pending = post(accounts, 0, 10, 10)

    def resolve(offset: int, kind: str) -> None:
        with accounts.transaction():
            txn, event_id = transaction(accounts, offset, kind, pending_of=pending)
            entries(accounts, txn, event_id, offset, (MP, "debit", 10), (GR, "credit", 10))

    resolve(1, "post")
    with pytest.raises(ConstraintViolation) as refused, mapped_errors():
        resolve(2, "void")
    assert refused.value.constraint == "transactions_resolved_once"


def test_an_event_and_an_offset_are_applied_at_most_once(accounts: Conn) -> None:
    event_id = event(accounts, 0)
    with pytest.raises(ConstraintViolation) as refused, mapped_errors():
        accounts.execute(
            "INSERT INTO ledger.events (event_id, type, payment_id, merchant_id, outcome,"
            " source_topic, source_partition, source_offset)"
            " VALUES (%s, 'payment.initiated', 'pay_0', 'mer_a', 'posted', 't', 0, 99)",
            (event_id,),
        )
    assert refused.value.constraint == "events_pkey"
    with pytest.raises(ConstraintViolation) as refused, mapped_errors():
        event(accounts, 0)
    assert refused.value.constraint == "events_offset_once"


def test_an_entry_keeps_its_transactions_source(accounts: Conn) -> None:
    with pytest.raises(ConstraintViolation) as refused, mapped_errors():
        write(accounts, 0, (GR, "debit", 1), (MP, "credit", 1), entry_offset=7)  # not 0
    assert refused.value.constraint == "entries_source"


def test_the_ledger_ddl_applies_again_without_touching_the_books(accounts: Conn) -> None:
    post(accounts, 0, 700, 700)
    # What replay's swap runs on the live ledger.
    accounts.execute("SELECT public.ledger_install('ledger')")
    accounts.execute("SELECT public.ledger_install('ledger')")
    assert accounts.execute("SELECT sum(debits) FROM ledger.balances").fetchone() == (700,)
    with pytest.raises(ConstraintViolation), mapped_errors():
        accounts.execute("DELETE FROM ledger.entries")
    with pytest.raises(ConstraintViolation), mapped_errors():
        post(accounts, 1, 1, 2)
