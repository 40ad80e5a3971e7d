"""Open event streams per API key, counted across every server process of one ``serve-api``.

A stream holds a connection and wakes up on every change of its payment, so a key may keep at
most ``api.max_streams_per_key`` open at once (beyond it, 429 ``too_many_streams``). Each key's
slot in the shared state (``shared_state.py``) counts its streams per server process: a
process only ever changes its own count, and a count left by a process that was killed is
dropped by the next process that reads it, so a crash never uses up a key's quota.
"""

from __future__ import annotations

import logging

from workers.api.shared_state import SharedState

log = logging.getLogger(__name__)


class StreamQuota:
    def __init__(self, state: SharedState, per_key: int) -> None:
        self._state = state
        self._table = state.streams
        self.per_key = per_key
        self._me = state.claim_process_slot()
        if self._me is None:
            log.warning("every stream-count slot is taken: this process's streams go uncounted")
        else:
            self._forget_counts_of(self._me)

    def open(self, key: int) -> bool:
        """Count a stream of ``key`` as open; False (nothing counted) if it has its fill."""
        if self._me is None:
            return True
        table, stripe = self._table, key % self._table.stripes
        table.lock(stripe)
        try:
            keys = table.keys(stripe)
            if key in keys:
                way, new = keys.index(key), None
                counts = self._live_counts(stripe, way)
            else:
                free = self._free_slot(stripe, keys)
                if free is None:
                    log.warning("no slot to count the streams of a key: this one goes uncounted")
                    return True
                way, new, counts = free, key, [0] * self._state.processes
            if sum(counts) >= self.per_key:
                return False
            counts[self._me] += 1
            table.put(stripe, way, tuple(counts), key=new)
        finally:
            table.unlock(stripe)
        return True

    def close(self, key: int) -> None:
        """Count one of ``key``'s streams, counted by ``open``, as closed."""
        if self._me is None:
            return
        table, stripe = self._table, key % self._table.stripes
        table.lock(stripe)
        try:
            keys = table.keys(stripe)
            if key not in keys:
                return  # its count was never taken (no slot then)
            way = keys.index(key)
            counts = list(table.record(stripe, way))
            counts[self._me] = max(0, counts[self._me] - 1)
            table.put(stripe, way, tuple(counts), key=None if any(counts) else 0)
        finally:
            table.unlock(stripe)

    def _live_counts(self, stripe: int, way: int) -> list[int]:
        """The slot's counts, those of dead processes set to 0 (and written so)."""
        counts = [int(c) for c in self._table.record(stripe, way)]
        dead = [
            slot
            for slot, count in enumerate(counts)
            if count and slot != self._me and not self._state.process_alive(slot)
        ]
        for slot in dead:
            counts[slot] = 0
        if dead:
            self._table.put(stripe, way, tuple(counts))
        return counts

    def _free_slot(self, stripe: int, keys: tuple[int, ...]) -> int | None:
        """An unused slot, or one whose streams all belonged to processes that died."""
        if 0 in keys:
            return keys.index(0)
        for way in range(len(keys)):
            if not any(self._live_counts(stripe, way)):
                return way
        return None

    def _forget_counts_of(self, slot: int) -> None:
        """Drop what a dead process that had this process slot left counted."""
        table = self._table
        for stripe in range(table.stripes):
            table.lock(stripe)
            try:
                for way in range(len(table.keys(stripe))):
                    counts = list(table.record(stripe, way))
                    if counts[slot]:
                        counts[slot] = 0
                        table.put(stripe, way, tuple(counts))
            finally:
                table.unlock(stripe)
