"""The ledger's PostgreSQL side, for the ``ledger`` schema or replay's shadow of it.

Nothing here commits: callers own the transaction (one per batch), so postings, the applied
events and the stored offsets always commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import psycopg
from psycopg import sql
from psycopg.errors import CheckViolation

from workers.core.sql import load_queries
from workers.ledger.chain import TxnRecord
from workers.ledger.rules import Account, Code, Kind, PaymentState, Pending

Conn = psycopg.Connection[Any]
Partition = tuple[str, int]

LIVE_SCHEMA: Final = "ledger"
SHADOW_SCHEMA: Final = "ledger_shadow"  # where replay builds
PREVIOUS_SCHEMA: Final = "ledger_previous"  # where replay keeps the ledger it replaced
# Held shared by every batch transaction and exclusively by replay's swap ("Ledg").
SWAP_LOCK: Final = 0x4C656467

_Q = load_queries("workers.ledger")


def queries(schema: str) -> dict[str, sql.Composed]:
    """The named queries with ``{schema}`` (and replay's ``{live}``, ``{previous}``) filled."""
    names = {
        "schema": sql.Identifier(schema),
        "live": sql.Identifier(LIVE_SCHEMA),
        "previous": sql.Identifier(PREVIOUS_SCHEMA),
    }
    return {name: q.format(**names) for name, q in _Q.items()}


# The records below are named tuples, not frozen dataclasses: as immutable, and built several
# times per event in a replay, where a frozen dataclass's field-by-field __init__ cost ~10% of
# the CPU.


class Cursor(NamedTuple):
    """Where a partition stands: the next offset to apply and the head of its hash chain."""

    next_offset: int
    seq: int
    hash: bytes


# The COPYs' column types, in their columns' order (queries.sql): binary COPY, as each value's
# text form costs the client its formatting and the server its parsing.
EVENT_TYPES: Final = ("uuid", "text", "text", "text", "int8", "text", "text", "text", "text",
                      "int4", "int8")  # fmt: skip
TRANSACTION_TYPES: Final = ("uuid", "text", "text", "text", "text", "uuid", "uuid", "text",
                            "int4", "int8", "int8", "bytea", "bytea")  # fmt: skip
ENTRY_TYPES: Final = ("uuid", "int2", "text", "text", "text", "int8", "text", "uuid", "text",
                      "int4", "int8")  # fmt: skip


class EventRow(NamedTuple):
    """A row of ``events``, its fields in the order of the ``events_copy`` columns."""

    event_id: uuid.UUID
    type: str
    payment_id: str
    merchant_id: str
    amount: int | None
    currency: str | None
    reference: str | None
    outcome: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    topic: str
    partition: int
    offset: int
    event_id: uuid.UUID | None
    error_type: str
    error: str


class ChainedTxn(NamedTuple):
    record: TxnRecord
    prev_hash: bytes
    hash: bytes


@dataclass
class Writes:
    """Everything one batch (or one message of it) adds to the ledger."""

    cursors: dict[Partition, Cursor]
    events: list[EventRow] = field(default_factory=list)
    accounts: dict[str, Account] = field(default_factory=dict)
    txns: list[ChainedTxn] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)


class LedgerStore:
    def __init__(self, schema: str = LIVE_SCHEMA, *, bulk: bool = False) -> None:
        """``bulk``: the schema's per-row checks are suspended while it loads (replay's shadow,
        ``workers.ledger.bulk``); each transaction's balance is then checked here, as it is
        written, with the error the database's trigger raises."""
        self.schema = schema
        self.bulk = bulk
        self.q = queries(schema)

    def generation(self, conn: Conn) -> int:
        """Take the swap lock (shared, until the transaction ends) and read the generation."""
        conn.execute(self.q["generation_lock"], {"lock": SWAP_LOCK})
        row = conn.execute(self.q["generation_get"]).fetchone()
        assert row is not None, "ledger state row missing"
        return int(row[0])

    def lock_cursors(self, conn: Conn, partitions: Iterable[Partition]) -> dict[Partition, Cursor]:
        wanted = sorted(set(partitions))
        params = {"topics": [t for t, _ in wanted], "partitions": [p for _, p in wanted]}
        rows = conn.execute(self.q["cursors_lock"], params).fetchall()
        return {(t, p): Cursor(int(n), int(seq), bytes(h)) for t, p, n, seq, h in rows}

    def stored_offsets(self, conn: Conn, topic: str) -> dict[int, int]:
        rows = conn.execute(self.q["cursors_of_topic"], {"topic": topic}).fetchall()
        return {int(p): int(n) for p, n in rows}

    def seen(self, conn: Conn, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        if not event_ids:
            return set()
        rows = conn.execute(self.q["events_seen"], {"ids": event_ids}).fetchall()
        return {row[0] for row in rows}

    def payment_states(self, conn: Conn, payment_ids: list[str]) -> dict[str, PaymentState]:
        if not payment_ids:
            return {}
        # Never a cached generic plan: one made while the tables were small (a new ledger, a
        # replay's shadow) scans them whole for ever after; a fresh plan uses the indexes.
        rows = conn.execute(
            self.q["payment_states"], {"payment_ids": payment_ids}, prepare=False
        ).fetchall()
        return {row[0]: _state(row) for row in rows}

    def write(self, conn: Conn, writes: Writes) -> None:
        if self.bulk:
            for txn in writes.txns:
                _check_balanced(txn.record)
        with conn.cursor() as cur:
            if writes.events:
                with cur.copy(self.q["events_copy"]) as copy:
                    copy.set_types(EVENT_TYPES)
                    for row in writes.events:
                        copy.write_row(row)  # already in the columns' order
            if writes.accounts:
                cur.execute(self.q["accounts_add"], _accounts_params(writes.accounts))
            if writes.txns:
                self._copy_txns(cur, writes.txns)
            if writes.dead_letters:
                cur.executemany(
                    self.q["dead_letter_add"],
                    [
                        {"topic": d.topic, "partition": d.partition, "offset": d.offset,
                         "event_id": d.event_id, "error_type": d.error_type, "error": d.error}
                        for d in writes.dead_letters
                    ],
                )  # fmt: skip
            if writes.cursors:
                cur.execute(self.q["cursors_save"], _cursor_params(writes.cursors))

    def _copy_txns(self, cur: psycopg.Cursor[Any], txns: list[ChainedTxn]) -> None:
        with cur.copy(self.q["transactions_copy"]) as copy:
            copy.set_types(TRANSACTION_TYPES)
            for c in txns:
                t = c.record
                copy.write_row(
                    (t.id, t.kind, t.payment_id, t.merchant_id, t.reference, t.pending_of,
                     t.event_id, t.topic, t.partition, t.offset, t.seq, c.prev_hash, c.hash)
                )  # fmt: skip
        with cur.copy(self.q["entries_copy"]) as copy:
            copy.set_types(ENTRY_TYPES)
            for c in txns:
                t = c.record
                for e in t.entries:
                    copy.write_row(
                        (t.id, e.line, e.account_id, e.direction, e.phase, e.amount,
                         e.currency, t.event_id, t.topic, t.partition, t.offset)
                    )  # fmt: skip

    def check_now(self, conn: Conn) -> None:
        """Run the deferred balance checks now (raises if a transaction does not balance)."""
        if self.bulk:
            return  # nothing deferred: write() checked the balances
        conn.execute(self.q["constraints_now"])


def _check_balanced(txn: TxnRecord) -> None:
    """What the schema's ``check_balanced`` trigger verifies, raising the error it raises."""
    nets: dict[tuple[str, str], int] = {}
    for e in txn.entries:
        key = (e.currency, e.phase)
        nets[key] = nets.get(key, 0) + (e.amount if e.direction == "debit" else -e.amount)
    if len(txn.entries) < 2:
        raise CheckViolation(
            f"ledger transaction {txn.id} has {len(txn.entries)} entries; it needs two or more"
        )
    unbalanced = ", ".join(f"{c}/{p}" for (c, p), net in nets.items() if net)
    if unbalanced:
        raise CheckViolation(f"ledger transaction {txn.id} does not balance in {unbalanced}")


def _state(row: tuple[Any, ...]) -> PaymentState:
    _pid, txn, merchant, currency, amount, account, resolution, refunded, refs, captured = row
    pending = None if txn is None else Pending(txn, merchant, currency, int(amount), Code(account))
    return PaymentState(
        pending=pending,
        resolution=None if resolution is None else Kind(resolution),
        refunded=int(refunded),
        references=frozenset((Kind(kind), ref) for kind, ref in refs or ()),
        captured=int(captured),
    )


def _accounts_params(accounts: Mapping[str, Account]) -> dict[str, list[Any]]:
    ordered = [accounts[k] for k in sorted(accounts)]
    return {
        "ids": [a.id for a in ordered],
        "codes": [a.code.value for a in ordered],
        "merchants": [a.merchant_id for a in ordered],
        "currencies": [a.currency for a in ordered],
        "sides": [a.normal_side.value for a in ordered],
    }


def _cursor_params(cursors: Mapping[Partition, Cursor]) -> dict[str, list[Any]]:
    keys = sorted(cursors)
    return {
        "topics": [t for t, _ in keys],
        "partitions": [p for _, p in keys],
        "offsets": [cursors[k].next_offset for k in keys],
        "seqs": [cursors[k].seq for k in keys],
        "hashes": [cursors[k].hash for k in keys],
    }
