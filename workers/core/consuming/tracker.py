"""Per partition: which offsets are in flight, and how far it is safe to commit."""

from __future__ import annotations

from collections.abc import Iterable

Partition = tuple[str, int]


class OffsetTracker:
    """Offsets commit only below the lowest unfinished one of their partition, so whatever had
    not finished when a consumer dies is delivered again."""

    def __init__(self) -> None:
        self._pending: dict[Partition, set[int]] = {}
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def started(self, partition: Partition, offset: int) -> None:
        self._pending.setdefault(partition, set()).add(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def finished(self, partition: Partition, offset: int) -> None:
        pending = self._pending.get(partition)
        if pending is not None:  # else: forgotten in a rebalance meanwhile
            pending.discard(offset)

    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def committable(self) -> dict[Partition, int]:
        """Offsets to commit now: the lowest unfinished one, or past the last seen."""
        ready: dict[Partition, int] = {}
        for partition, upper in self._next.items():
            pending = self._pending.get(partition)
            offset = min(pending) if pending else upper
            if offset > self._committed.get(partition, -1):
                ready[partition] = offset
        return ready

    def mark_committed(self, offsets: dict[Partition, int]) -> None:
        # Not for a partition forgotten meanwhile (given up in a rebalance during the commit).
        self._committed.update((p, o) for p, o in offsets.items() if p in self._next)

    def forget(self, partitions: Iterable[Partition]) -> None:
        for partition in partitions:
            self._pending.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
