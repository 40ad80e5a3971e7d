"""flowpay ledger check finds every kind of violation planted behind the database's back.

Each test disables the triggers it needs to get past (inside its own database only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence

import pytest
import typer
from typer.testing import CliRunner, Result

from flowpay_cli.commands import ledger as ledger_cli
from tests.conftest import env_for
from tests.helpers.db import Conn
from tests.test_ledger_support import (
    balances,
    ledger_thread,
    merged,
    mixed,
    nonzero,
    payouts,
    publish,
    quick,
    wait_consumed,
)
from workers.core.config import Settings
from workers.core.money import Money
from workers.ledger.chain import GENESIS, EntryRecord, TxnRecord, digest
from workers.ledger.check import run_checks


def cli(settings: Settings, args: Sequence[str]) -> Result:
    app = typer.Typer()
    app.add_typer(ledger_cli.ledger_app, name="ledger")
    app.command("other")(lambda: None)
    flowpay_env = {k: v for k, v in env_for(settings).items() if k.startswith("FLOWPAY_")}
    return CliRunner().invoke(app, ["ledger", *args], env=flowpay_env)


@pytest.fixture
def books(settings: Settings, db: Conn) -> Conn:
    """A ledger posted by run-ledger from a mixed history, payouts among it; every check
    passes on it, and its balances are the scenario's."""
    settings = quick(settings)
    scenario = merged(mixed(24), payouts())
    sent = publish(settings, scenario.events)
    with ledger_thread(settings):
        wait_consumed(db, sent)
    assert [r.name for r in run_checks(db) if not r.ok] == []
    assert balances(db) == nonzero(scenario.expected)
    return db


def one(db: Conn, query: str) -> tuple[object, ...]:
    row = db.execute(query).fetchone()
    assert row is not None, query
    return tuple(row)


def txn_of(db: Conn, kind: str) -> uuid.UUID:
    (txn,) = one(
        db, f"SELECT id FROM ledger.transactions WHERE kind = '{kind}' ORDER BY id LIMIT 1"
    )
    assert isinstance(txn, uuid.UUID)
    return txn


def unbalance_an_entry(db: Conn) -> str:
    db.execute("ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only")
    txn = txn_of(db, "refund")
    db.execute(
        "UPDATE ledger.entries SET amount = amount + 1 WHERE txn_id = %s AND line = 1", (txn,)
    )
    return f"transaction {txn}"


def drop_an_entry(db: Conn) -> str:
    db.execute("ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only")
    txn = txn_of(db, "authorize")
    db.execute("DELETE FROM ledger.entries WHERE txn_id = %s AND line = 2", (txn,))
    return f"transaction {txn}"


def tamper_a_balance(db: Conn) -> str:
    db.execute("ALTER TABLE ledger.balances DISABLE TRIGGER balances_derived")
    db.execute(
        "UPDATE ledger.balances SET credits = credits + 5 WHERE account_id = 'refunds_paid:USD'"
    )
    return "account refunds_paid:USD posted"


def resolve_twice(db: Conn) -> str:
    """A second resolution (a void) of a pending transfer that was already posted."""
    db.execute("ALTER TABLE ledger.transactions DROP CONSTRAINT transactions_resolved_once")
    payment, authorize = one(
        db,
        """SELECT a.payment_id, a.id
           FROM ledger.transactions a JOIN ledger.transactions p ON p.pending_of = a.id
           WHERE p.kind = 'post' ORDER BY a.id LIMIT 1""",
    )
    assert isinstance(payment, str)
    event_id = plant_event(db, payment, "payment.failed", None)
    plant_transaction(db, "void", payment, event_id, authorize_of=authorize, partition=99,
                      lines=[("merchant_payable:mer_a:USD", "debit", "pending", 1000),
                             ("gateway_receivable:USD", "credit", "pending", 1000)])  # fmt: skip
    return f"payment {payment}: pending transfer resolved 2 times"


def failed_without_a_void(db: Conn) -> str:
    """An applied payment.failed that voided nothing (the payment had succeeded)."""
    (payment,) = one(
        db, "SELECT payment_id FROM ledger.transactions WHERE kind = 'post' ORDER BY 1 LIMIT 1"
    )
    assert isinstance(payment, str)
    plant_event(db, payment, "payment.failed", None)
    return f"payment {payment}: 1 payment.failed, payment.canceled or payout.failed but 0 voided"


def refund_above_the_charge(db: Conn) -> str:
    """A refund posted (and chained correctly) for more than the payment's charge."""
    (payment,) = one(
        db, "SELECT payment_id FROM ledger.transactions WHERE kind = 'post' ORDER BY 1 LIMIT 1"
    )
    assert isinstance(payment, str)
    event_id = plant_event(db, payment, "payment.refunded", 5000)
    plant_transaction(db, "refund", payment, event_id, reference="re_big", partition=99,
                      lines=[("merchant_payable:mer_a:USD", "debit", "posted", 5000),
                             ("refunds_paid:USD", "credit", "posted", 5000)])  # fmt: skip
    return f"payment {payment}: refunds of"


def post_on_a_hold(db: Conn) -> str:
    """A posted entry on authorization_holds (which only ever holds pending amounts)."""
    (payment,) = one(
        db, "SELECT payment_id FROM ledger.transactions WHERE kind = 'capture' ORDER BY 1 LIMIT 1"
    )
    assert isinstance(payment, str)
    event_id = plant_event(db, payment, "payment.charge_reversed", 10)
    plant_transaction(db, "late_charge", payment, event_id, reference="ch_odd", partition=99,
                      lines=[("authorization_holds:USD", "debit", "posted", 10),
                             ("suspense:USD", "credit", "posted", 10)])  # fmt: skip
    return "authorization_holds:USD has posted entries"


def capture_a_charge(db: Conn) -> str:
    """A capture resolving a charge's pending transfer (a payment with automatic capture)."""
    payment, authorize = one(
        db,
        """SELECT a.payment_id, a.id FROM ledger.transactions a
           JOIN ledger.entries e ON e.txn_id = a.id AND e.account_id = 'gateway_receivable:USD'
           WHERE a.kind = 'authorize'
             AND NOT EXISTS (SELECT 1 FROM ledger.transactions r WHERE r.pending_of = a.id)
           ORDER BY a.id LIMIT 1""",
    )
    assert isinstance(payment, str)
    event_id = plant_event(db, payment, "payment.succeeded", 500)
    plant_transaction(db, "capture", payment, event_id, authorize_of=authorize, partition=99,
                      lines=[("merchant_payable:mer_a:USD", "debit", "pending", 1000),
                             ("gateway_receivable:USD", "credit", "pending", 1000),
                             ("gateway_receivable:USD", "debit", "posted", 500),
                             ("merchant_payable:mer_a:USD", "credit", "posted", 500)])  # fmt: skip
    return f"payment {payment}: a capture resolves a charge"


def hold_left_behind(db: Conn) -> str:
    """A hold's release lost: the holds' balance no longer what the open holds come to."""
    db.execute("ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only")
    db.execute("ALTER TABLE ledger.balances DISABLE TRIGGER balances_derived")
    (txn,) = one(
        db,
        """SELECT r.id FROM ledger.transactions r
           JOIN ledger.entries e ON e.txn_id = r.id AND e.account_id = 'authorization_holds:USD'
           WHERE r.kind = 'void' ORDER BY r.id LIMIT 1""",
    )
    db.execute("DELETE FROM ledger.entries WHERE txn_id = %s", (txn,))
    db.execute(
        """UPDATE ledger.balances b SET debits = c.debits, credits = c.credits
           FROM (SELECT account_id, phase, coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0) AS debits,
                        coalesce(sum(amount) FILTER (WHERE direction = 'credit'), 0) AS credits
                 FROM ledger.entries GROUP BY account_id, phase) c
           WHERE b.account_id = c.account_id AND b.phase = c.phase"""
    )
    return "authorization_holds:USD holds"


def post_in_transit(db: Conn) -> str:
    """A posted entry on payouts_in_transit (which only ever holds pending reservations)."""
    (payout,) = one(db, "SELECT payment_id FROM ledger.events WHERE type = 'payout.paid' LIMIT 1")
    assert isinstance(payout, str)
    event_id = plant_event(db, payout, "payment.charge_reversed", 10)
    plant_transaction(db, "late_charge", payout, event_id, reference="ch_odd", partition=99,
                      lines=[("payouts_in_transit:USD", "debit", "posted", 10),
                             ("suspense:USD", "credit", "posted", 10)])  # fmt: skip
    return "payouts_in_transit:USD has posted entries (10)"


def paid_without_a_post(db: Conn) -> str:
    """An applied payout.paid that posted nothing (the payout had failed)."""
    (payout,) = one(
        db, "SELECT payment_id FROM ledger.events WHERE type = 'payout.failed' ORDER BY 1 LIMIT 1"
    )
    assert isinstance(payout, str)
    plant_event(db, payout, "payout.paid", 300)
    return f"payment {payout}: 1 payment.succeeded or payout.paid but 0 posted transfers"


def rewrite_a_transaction(db: Conn) -> str:
    db.execute("ALTER TABLE ledger.transactions DISABLE TRIGGER transactions_append_only")
    txn = txn_of(db, "refund")
    db.execute("UPDATE ledger.transactions SET reference = 're_forged' WHERE id = %s", (txn,))
    return f"(transaction {txn}): hash does not match its content"


def break_the_chain(db: Conn) -> str:
    db.execute("ALTER TABLE ledger.transactions DISABLE TRIGGER transactions_append_only")
    txn = txn_of(db, "post")
    db.execute("UPDATE ledger.transactions SET prev_hash = %s WHERE id = %s", (bytes(32), txn))
    return f"(transaction {txn}): prev_hash is not the previous transaction's hash"


def plant_event(db: Conn, payment: str, kind: str, amount: int | None) -> uuid.UUID:
    event_id = uuid.uuid4()
    (offset,) = one(db, "SELECT coalesce(max(source_offset), 0) + 1000 FROM ledger.events")
    db.execute(
        """INSERT INTO ledger.events (event_id, type, payment_id, merchant_id, amount, outcome,
                                      source_topic, source_partition, source_offset)
           VALUES (%s, %s, %s, 'mer_a', %s, 'posted', 'planted', 99, %s)""",
        (event_id, kind, payment, amount, offset),
    )
    return event_id


def plant_transaction(
    db: Conn,
    kind: str,
    payment: str,
    event_id: uuid.UUID,
    *,
    lines: list[tuple[str, str, str, int]],
    partition: int,
    reference: str | None = None,
    authorize_of: object = None,
) -> None:
    """A balanced transaction, correctly chained on a partition of its own."""
    (offset,) = one(db, f"SELECT source_offset FROM ledger.events WHERE event_id = '{event_id}'")
    assert isinstance(offset, int)
    record = TxnRecord(
        id=uuid.uuid4(), kind=kind, payment_id=payment, merchant_id="mer_a", reference=reference,
        pending_of=authorize_of if isinstance(authorize_of, uuid.UUID) else None,
        event_id=event_id, topic="planted", partition=partition, offset=offset, seq=1,
        entries=tuple(EntryRecord(n, a, d, p, amount, "USD") for n, (a, d, p, amount) in enumerate(lines, 1)),
    )  # fmt: skip
    link = digest(GENESIS, record)
    with db.transaction():
        db.execute(
            """INSERT INTO ledger.transactions (id, kind, payment_id, merchant_id, reference,
                   pending_of, event_id, source_topic, source_partition, source_offset, seq,
                   prev_hash, hash)
               VALUES (%s, %s, %s, 'mer_a', %s, %s, %s, 'planted', %s, %s, 1, %s, %s)""",
            (
                record.id,
                kind,
                payment,
                reference,
                record.pending_of,
                event_id,
                partition,
                offset,
                GENESIS,
                link,
            ),
        )
        for e in record.entries:
            db.execute(
                """INSERT INTO ledger.entries VALUES (%s, %s, %s, %s, %s, %s, 'USD', %s, 'planted', %s, %s)""",
                (
                    record.id,
                    e.line,
                    e.account_id,
                    e.direction,
                    e.phase,
                    e.amount,
                    event_id,
                    partition,
                    offset,
                ),
            )
        db.execute(
            """INSERT INTO ledger.cursors (source_topic, source_partition, next_offset, chain_seq, chain_hash)
               VALUES ('planted', %s, %s, 1, %s)""",
            (partition, offset + 1, link),
        )


Plant = Callable[[Conn], str]


@pytest.mark.parametrize(
    ("plant", "check"),
    [
        (unbalance_an_entry, "balanced"),
        (drop_an_entry, "balanced"),
        (tamper_a_balance, "balances"),
        (resolve_twice, "resolved_once"),
        (failed_without_a_void, "history"),
        (refund_above_the_charge, "history"),
        (post_on_a_hold, "holds"),
        (capture_a_charge, "holds"),
        (hold_left_behind, "holds"),
        (post_in_transit, "payouts"),
        (paid_without_a_post, "history"),
        (rewrite_a_transaction, "hash_chain"),
        (break_the_chain, "hash_chain"),
    ],
)
def test_check_finds_each_kind_of_violation(
    books: Conn, settings: Settings, plant: Plant, check: str
) -> None:
    clue = plant(books)
    failed = {r.name: r.violations for r in run_checks(books) if not r.ok}
    assert check in failed, failed
    assert any(clue in v for v in failed[check]), failed[check]
    done = cli(settings, ["check", "--json"])
    assert done.exit_code == 1, done.output
    report = json.loads(done.output)
    assert report["ok"] is False
    listed = {c["name"]: c["violations"] for c in report["checks"]}
    assert listed[check] == failed[check]


def test_planted_history_violations_leave_the_other_checks_passing(books: Conn) -> None:
    refund_above_the_charge(books)
    assert [r.name for r in run_checks(books) if not r.ok] == ["history"]


def test_check_exits_0_on_sound_books_and_prints_a_table(books: Conn, settings: Settings) -> None:
    done = cli(settings, ["check"])
    assert done.exit_code == 0, done.output
    for name in ("balanced", "balances", "resolved_once", "history", "holds", "hash_chain"):
        assert name in done.output
    assert "FAIL" not in done.output
    tamper_a_balance(books)
    failed = cli(settings, ["check"])
    assert failed.exit_code == 1
    assert "FAIL" in failed.output
    assert "refunds_paid:USD posted" in failed.output


def test_balances_shows_pending_and_posted_per_account(books: Conn, settings: Settings) -> None:
    done = cli(settings, ["balances", "--merchant", "mer_b", "--currency", "usd", "--json"])
    assert done.exit_code == 0, done.output
    rows = json.loads(done.output)
    assert [r["account"] for r in rows] == ["merchant_payable:mer_b:USD"]
    (pending, posted) = one(
        books,
        """SELECT (sum(credits - debits) FILTER (WHERE phase = 'pending'))::bigint,
                  (sum(credits - debits) FILTER (WHERE phase = 'posted'))::bigint
           FROM ledger.balances WHERE account_id = 'merchant_payable:mer_b:USD'""",
    )
    assert (rows[0]["pending"], rows[0]["posted"]) == (pending, posted)
    assert isinstance(posted, int)
    assert posted > 0
    table = cli(settings, ["balances"])
    assert table.exit_code == 0
    assert "gateway_receivable" in table.output
    assert "(house)" in table.output
    assert str(Money(posted, "USD")) in table.output  # major units too
