"""Requests per API key: a token bucket, shared by every server process of one ``serve-api``.

Each key's bucket holds up to ``api.rate_limit_burst`` tokens and refills at
``api.rate_limit_per_s`` (Stripe's default: 100/s, bursts of 200); a request takes one, and
finds none beyond the limit (429 ``rate_limited``, with ``Retry-After``). The buckets live in
the shared state (``shared_state.py``), so N server processes allow a key's rate once, not N
times, and the intake's hot path gains no database round trip: a few microseconds under one
stripe's mutex.

A bucket left alone until it is full again is the same as no bucket, so its slot is free for
another key. Only when every slot of a stripe is held by a key still drawing on its bucket is
the fullest one given up, and its key starts again from a full bucket.
"""

from __future__ import annotations

import time

from workers.api.shared_state import StripedTable


class RateLimiter:
    def __init__(self, table: StripedTable, per_s: float, burst: int) -> None:
        self._table = table
        self.per_s = per_s
        self.burst = burst

    def take(self, key: int, now: float | None = None) -> float:
        """Take a token from ``key``'s bucket: 0 if there was one, else the seconds until
        there will be (nothing is taken then)."""
        now = time.monotonic() if now is None else now
        table = self._table
        stripe = key % table.stripes
        table.lock(stripe)
        try:
            keys = table.keys(stripe)
            if key in keys:
                way, new = keys.index(key), None
                tokens = self._refilled(table.record(stripe, way), now)
            else:
                way, new = self._slot_for_new_key(stripe, keys, now), key
                tokens = float(self.burst)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_s
            table.put(stripe, way, (tokens - 1 if wait == 0 else tokens, now), key=new)
        finally:
            table.unlock(stripe)
        return wait

    def _refilled(self, record: tuple[float, ...], now: float) -> float:
        tokens, counted = record
        return min(float(self.burst), tokens + max(0.0, now - counted) * self.per_s)

    def _slot_for_new_key(self, stripe: int, keys: tuple[int, ...], now: float) -> int:
        """A free slot, else the one whose bucket is fullest (a full one is as good as free)."""
        if 0 in keys:
            return keys.index(0)
        table = self._table
        fullness = [self._refilled(table.record(stripe, way), now) for way in range(len(keys))]
        return fullness.index(max(fullness))
