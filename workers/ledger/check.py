"""`flowpay ledger check`: verify every invariant of a ledger schema, listing each violation.

The database already refuses most violations as they are written; these checks find what got
past it anyway (a trigger disabled, rows altered by hand, a bug in the posting rules) and
verify the hash chain, which nothing in the database can.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from psycopg import sql
from psycopg.pq import TransactionStatus

from workers.ledger.chain import GENESIS, EntryRecord, TxnRecord, digest
from workers.ledger.store import LIVE_SCHEMA, Conn, queries

_CHAIN_FETCH: Final = 5000


@dataclass(frozen=True)
class CheckResult:
    name: str
    description: str
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "ok": self.ok,
            "violations": self.violations,
        }


Check = Callable[[Conn, dict[str, sql.Composed]], list[str]]


def run_checks(conn: Conn, schema: str = LIVE_SCHEMA) -> list[CheckResult]:
    """Every check on ``schema``, in one read-only snapshot."""
    q = queries(schema)
    outermost = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction():
        if outermost:  # a savepoint inside the caller's transaction keeps the caller's snapshot
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return [CheckResult(name, text, check(conn, q)) for name, text, check in CHECKS]


def _unbalanced(conn: Conn, q: dict[str, sql.Composed]) -> list[str]:
    found = []
    for txn, payment, lines, unbalanced in conn.execute(q["check_unbalanced"]):
        if lines < 2:
            found.append(f"transaction {txn} ({payment}) has {lines} entries; it needs two")
        if unbalanced:
            found.append(f"transaction {txn} ({payment}) does not balance: {unbalanced}")
    return found


def _balances(conn: Conn, q: dict[str, sql.Composed]) -> list[str]:
    return [
        f"account {account} {phase}: stored debits {sd} credits {sc}, "
        f"entries sum to debits {ed} credits {ec}"
        for account, phase, sd, sc, ed, ec in conn.execute(q["check_balances"])
    ]


def _resolutions(conn: Conn, q: dict[str, sql.Composed]) -> list[str]:
    found = []
    for payment, reserved, resolutions, released, misdirected in conn.execute(
        q["check_resolutions"]
    ):
        if resolutions > 1:
            found.append(f"payment {payment}: pending transfer resolved {resolutions} times")
        if released > reserved:
            found.append(f"payment {payment}: released {released} of a pending {reserved}")
        if misdirected:
            found.append(f"payment {payment}: a resolution names no pending transfer of it")
    return found


@dataclass(frozen=True)
class _History:
    payment: str
    initiated: int
    initiated_amount: int
    succeeded: int
    failed: int
    refunded_events: int
    refunded_amount: int
    reversed_events: int
    reversed_amount: int
    authorizes: int
    authorized: int
    posts: int
    posted: int
    captures: int
    voids: int
    refunds: int
    refunded: int
    late_charges: int
    late_charged: int
    reversals: int
    reversed: int


def _history(conn: Conn, q: dict[str, sql.Composed]) -> list[str]:
    found = []
    for row in conn.execute(q["check_history"]):
        h = _History(*row)
        found += [f"payment {h.payment}: {problem}" for problem in _history_problems(h)]
    return found


def _history_problems(h: _History) -> Iterator[str]:
    if h.initiated != h.authorizes:
        yield f"{h.initiated} payments (or payouts) created but {h.authorizes} pending transfers"
    elif h.initiated_amount != h.authorized:
        yield f"pending transfer of {h.authorized} for a payment created of {h.initiated_amount}"
    if h.succeeded != h.posts:
        yield f"{h.succeeded} payment.succeeded or payout.paid but {h.posts} posted transfers"
    elif h.posts and not h.captures and h.posted != h.authorized:
        yield f"posted {h.posted} of a pending transfer of {h.authorized}"
    elif h.captures and not 0 < h.posted <= h.authorized:
        yield f"captured {h.posted} of a hold of {h.authorized}"
    if h.failed != h.voids:
        failed = "payment.failed, payment.canceled or payout.failed"
        yield f"{h.failed} {failed} but {h.voids} voided transfers"
    if (h.refunded_events, h.refunded_amount) != (h.refunds, h.refunded):
        yield (
            f"{h.refunded_events} payment.refunded for {h.refunded_amount} but "
            f"{h.refunds} refund transfers for {h.refunded}"
        )
    if h.refunded > h.posted:
        yield f"refunds of {h.refunded} above the posted charge of {h.posted}"
    expected = (h.reversed_events, h.reversed_amount)
    if (h.late_charges, h.late_charged) != expected or (h.reversals, h.reversed) != expected:
        yield (
            f"{h.reversed_events} payment.charge_reversed for {h.reversed_amount} but "
            f"{h.late_charges} late charges for {h.late_charged} and "
            f"{h.reversals} reversals for {h.reversed}"
        )


def _holds(conn: Conn, q: dict[str, sql.Composed]) -> list[str]:
    found = []
    for problem, subject, pending, posted, open_ in conn.execute(q["check_holds"]):
        if problem == "resolution":
            payment, kind = subject.split(" ")
            what = "a charge" if kind == "capture" else "a hold"
            found.append(f"payment {payment}: a {kind} resolves {what}")
        elif posted:
            found.append(f"authorization_holds:{subject} has posted entries ({posted})")
        else:
            found.append(
                f"authorization_holds:{subject} holds {pending} pending, "
                f"but the holds not yet resolved come to {open_}"
            )
    return found


def _payouts(conn: Conn, q: dict[str, sql.Composed]) -> list[str]:
    found = []
    for code, currency, pending, posted, open_ in conn.execute(q["check_payouts"]):
        if code == "payouts_paid":
            found.append(f"payouts_paid:{currency} holds {pending} pending; it is only posted to")
        elif posted:
            found.append(f"payouts_in_transit:{currency} has posted entries ({posted})")
        else:
            found.append(
                f"payouts_in_transit:{currency} holds {pending} pending, "
                f"but the payouts not yet paid or failed come to {open_}"
            )
    return found


def _hash_chain(conn: Conn, q: dict[str, sql.Composed]) -> list[str]:
    found: list[str] = []
    heads: dict[tuple[str, int], tuple[int, bytes, int]] = {}
    with conn.cursor(name="ledger_chain_check") as cursor:
        cursor.itersize = _CHAIN_FETCH
        cursor.execute(q["chain_rows"])
        for key, rows in itertools.groupby(cursor, key=lambda r: tuple(r[:13])):
            topic, partition, seq, txn_id = key[0], key[1], key[2], key[3]
            prev_hash, stored_hash, offset = bytes(key[11]), bytes(key[12]), key[10]
            last_seq, last_hash, last_offset = heads.get((topic, partition), (0, GENESIS, -1))
            where = f"{topic}[{partition}] seq {seq} (transaction {txn_id})"
            if seq != last_seq + 1:
                found.append(f"{where}: follows seq {last_seq}")
            if prev_hash != last_hash:
                found.append(f"{where}: prev_hash is not the previous transaction's hash")
            if offset < last_offset:
                found.append(f"{where}: offset {offset} after offset {last_offset}")
            if digest(prev_hash, _record(key, list(rows))) != stored_hash:
                found.append(f"{where}: hash does not match its content")
            heads[(topic, partition)] = (seq, stored_hash, offset)
    for topic, partition, seq, head in conn.execute(q["chain_heads"]):
        last_seq, last_hash, _ = heads.pop((topic, partition), (0, GENESIS, -1))
        if (seq, bytes(head)) != (last_seq, last_hash):
            found.append(f"{topic}[{partition}]: stored chain head seq {seq} is not the last")
    found += [f"{t}[{p}]: transactions but no stored chain head" for t, p in heads]
    return found


def _record(key: tuple[Any, ...], rows: list[tuple[Any, ...]]) -> TxnRecord:
    topic, partition, seq, txn_id, kind, payment, merchant, reference, pending_of, event_id = key[
        :10
    ]
    entries = tuple(EntryRecord(*row[13:19]) for row in rows if row[13] is not None)
    return TxnRecord(
        id=txn_id,
        kind=kind,
        payment_id=payment,
        merchant_id=merchant,
        reference=reference,
        pending_of=pending_of,
        event_id=event_id,
        topic=topic,
        partition=partition,
        offset=key[10],
        seq=seq,
        entries=entries,
    )


CHECKS: Final[tuple[tuple[str, str, Check], ...]] = (
    (
        "balanced",
        "every transaction has two or more entries and balances per currency and phase",
        _unbalanced,
    ),
    ("balances", "each account's stored balance equals the sum of its entries", _balances),
    (
        "resolved_once",
        "no pending transfer is resolved (posted, captured or voided) more than once",
        _resolutions,
    ),
    (
        "history",
        "each payment's (and payout's) postings match its events: posted iff succeeded or paid "
        "(a capture at most its hold), voided iff failed or canceled, refunds as refunded and "
        "never above the charge",
        _history,
    ),
    (
        "holds",
        "authorization holds are never posted, their balance is the holds not yet resolved, "
        "and a capture resolves a hold, a post a charge",
        _holds,
    ),
    (
        "payouts",
        "payouts in transit are never posted and hold exactly the payouts not yet paid or "
        "failed; payouts paid are never pending",
        _payouts,
    ),
    ("hash_chain", "every partition's hash chain is intact and ends at its head", _hash_chain),
)
