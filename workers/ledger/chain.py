"""The hash chain: each journal transaction's hash covers the previous one's and its own content.

There is one chain per source partition, in offset order: the order that a replay of that
partition reproduces exactly, whatever order the partitions are consumed in. Only content
derived from the event log is hashed (no timestamps), so a replay rebuilds identical hashes.
"""

from __future__ import annotations

import hashlib
import uuid
from operator import attrgetter
from typing import Final, NamedTuple

from pydantic_core import to_json

GENESIS: Final = bytes(32)
_BY_LINE: Final = attrgetter("line")


class EntryRecord(NamedTuple):
    """An entry as stored (a tuple: a record is made for every entry a batch writes)."""

    line: int
    account_id: str
    direction: str
    phase: str
    amount: int
    currency: str


class TxnRecord(NamedTuple):
    """A journal transaction as stored, with its entries."""

    id: uuid.UUID
    kind: str
    payment_id: str
    merchant_id: str
    reference: str | None
    pending_of: uuid.UUID | None
    event_id: uuid.UUID
    topic: str
    partition: int
    offset: int
    seq: int
    entries: tuple[EntryRecord, ...]


def digest(prev_hash: bytes, txn: TxnRecord) -> bytes:
    """sha256(previous hash || canonical JSON of the transaction and its entries).

    The canonical JSON is ``json.dumps(body, separators=(",", ":"), ensure_ascii=False)``
    encoded as UTF-8, byte for byte; pydantic-core's encoder writes the same bytes for these
    values (strings, integers, None, lists) in a fifth of the time, and a test holds the two
    equal, since every stored hash depends on them."""
    body = [
        txn.seq,
        str(txn.id),
        txn.kind,
        txn.payment_id,
        txn.merchant_id,
        txn.reference,
        None if txn.pending_of is None else str(txn.pending_of),
        str(txn.event_id),
        txn.topic,
        txn.partition,
        txn.offset,
        [
            [e.line, e.account_id, e.direction, e.phase, e.amount, e.currency]
            for e in sorted(txn.entries, key=_BY_LINE)
        ],
    ]
    return hashlib.sha256(prev_hash + to_json(body)).digest()
