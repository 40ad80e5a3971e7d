"""Wakes a server process's event streams when their payment changes, or their merchant has
new events.

The read model that writes a change may run in any ``serve-api`` process (they share one
consumer group), so the signal goes through PostgreSQL: a trigger on ``api.payments`` sends
``NOTIFY flowpay_payment_changes, '<payment id>'``, one on ``api.events`` ``NOTIFY
flowpay_merchant_events, '<merchant id>'``, and each process keeps one ``LISTEN`` connection
to both, fanning notifications out to its own streams. A wake-up only says "look again":
streams read what changed from the database, so a lost notification delays, never loses.

When the connection comes back after a loss, every stream must look again (a change may have
gone unnoticed meanwhile). Each then reads the database through the pool, so they are woken
spread over a window (``WAKE_ALL_PER_S`` a second, at most ``wake_window_s``, the heartbeat,
when every stream looks anyway), each at a random moment of it, never all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Final

import psycopg
from psycopg import AsyncConnection

from workers.core.sql import load_queries

log = logging.getLogger(__name__)
Q = load_queries("workers.api")


# Streams woken a second, on average, after the connection comes back: each reads its payment
# once, a few milliseconds of a pool connection.
WAKE_ALL_PER_S: Final = 500.0
PAYMENTS: Final = "flowpay_payment_changes"  # payload: a payment id
MERCHANT_EVENTS: Final = "flowpay_merchant_events"  # payload: a merchant id
Key = tuple[str, str]  # (channel, payload)


class ChangeFeed:
    def __init__(self, conninfo: str, *, wake_window_s: float, retry_s: float = 1.0) -> None:
        self._conninfo = conninfo
        self._retry_s = retry_s
        self._wake_window_s = wake_window_s
        self._waiters: dict[Key, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="api-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.contextmanager
    def subscribe(self, payload: str, channel: str = PAYMENTS) -> Iterator[asyncio.Event]:
        """An event set whenever ``channel`` may have news of ``payload`` (a payment that may
        have changed; a merchant that may have new events), until the block ends."""
        changed, key = asyncio.Event(), (channel, payload)
        self._waiters.setdefault(key, set()).add(changed)
        try:
            yield changed
        finally:
            waiters = self._waiters[key]
            waiters.discard(changed)
            if not waiters:
                del self._waiters[key]

    async def _listen(self) -> None:
        while True:
            try:
                async with await AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=10
                ) as conn:
                    await conn.execute(Q["stream_listen"])  # both channels, one statement
                    # Whatever changed while nobody listened is looked at again.
                    self._wake_all()
                    async for notify in conn.notifies():
                        self._wake((notify.channel, notify.payload))
            except psycopg.Error as exc:
                log.warning("change feed lost its database connection, reconnecting: %s", exc)
            await asyncio.sleep(self._retry_s)

    def _wake(self, key: Key) -> None:
        for changed in self._waiters.get(key, ()):
            changed.set()

    def _wake_all(self) -> None:
        """Every stream, each at a random moment of a window as long as their number needs."""
        streams = [changed for waiters in self._waiters.values() for changed in waiters]
        window = min(len(streams) / WAKE_ALL_PER_S, self._wake_window_s)
        loop = asyncio.get_running_loop()
        for changed in streams:
            loop.call_later(random.uniform(0, window), changed.set)
