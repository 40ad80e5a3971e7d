"""The payments' states as this process last committed them, so that a batch asks the database
only for the payments it has not seen.

A batch's states come from ``payment_states``, a query that derives them from the payment's
transactions and entries: most of the database's work for a batch. The process that wrote
those rows already holds what the query would give: the planner's states after its last
batch. They stay true only while no one else writes the payment's partition, and a partition's
cursor (next offset, chain sequence and hash) tells: every write to a partition moves it. So
each state is kept with its partition, and the cursors this process last committed are kept
too. When a batch finds a partition's cursor anywhere else (another consumer took the
partition for a while, replay swapped the ledger, a batch went one message at a time, a
message was dead-lettered), every state is dropped and the database asked again.

A batch's states are staged while its transaction is open and kept only once the caller says
it committed; each batch ``begin``s by dropping what was staged: a rolled-back batch leaves
nothing behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

from workers.ledger.rules import PaymentState
from workers.ledger.store import Cursor, Partition

LIMIT: Final = 50_000  # payments kept; the oldest go first (a payment's events come close)


class _Known(NamedTuple):
    partition: Partition
    state: PaymentState


class _Staged(NamedTuple):
    states: dict[str, _Known]
    cursors: dict[Partition, Cursor]


class KnownStates:
    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._states: dict[str, _Known] = {}
        self._cursors: dict[Partition, Cursor] = {}
        self._staged: _Staged | None = None

    def __len__(self) -> int:
        return len(self._states)

    def lookup(
        self, cursors: Mapping[Partition, Cursor], payments: Mapping[str, Partition]
    ) -> tuple[dict[str, PaymentState], list[str]]:
        """The states known of ``payments`` (each with the partition its events are read
        from) and the payments to ask the database for, given the batch's ``cursors`` as
        locked: everything is forgotten when one of them is not where this process left it."""
        if any(self._cursors.get(p, c) != c for p, c in cursors.items()):
            self.clear()
        known: dict[str, PaymentState] = {}
        missing: list[str] = []
        for payment, partition in payments.items():
            entry = self._states.get(payment)
            if entry is not None and entry.partition == partition and partition in cursors:
                known[payment] = entry.state
            else:
                missing.append(payment)
        return known, missing

    def begin(self) -> None:
        """A new batch: what an earlier one staged and never committed is dropped."""
        self._staged = None

    def stage(
        self,
        states: Mapping[str, PaymentState],
        partitions: Mapping[str, Partition],
        cursors: Mapping[Partition, Cursor],
    ) -> None:
        """What the batch in hand leaves: ``states`` of payments in ``partitions``, and the
        partitions' ``cursors``; kept once ``committed``."""
        self._staged = _Staged(
            {p: _Known(partitions[p], s) for p, s in states.items() if p in partitions},
            dict(cursors),
        )

    def committed(self) -> None:
        """The staged batch committed: its states and cursors are what the database holds."""
        if self._staged is None:
            return
        self._states.update(self._staged.states)
        self._cursors.update(self._staged.cursors)
        self._staged = None
        for _ in range(len(self._states) - self._limit):
            del self._states[next(iter(self._states))]

    def clear(self) -> None:
        """Forget everything: the database is asked again for every payment."""
        self._states.clear()
        self._cursors.clear()
        self._staged = None
