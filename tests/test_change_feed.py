"""The change feed's LISTEN connection, on the real PostgreSQL: after it reconnects, every
stream is woken to look again, spread over time rather than all at once against the pool."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from tests.helpers.db import Conn
from workers.api.change_feed import WAKE_ALL_PER_S, ChangeFeed
from workers.core.config import Settings
from workers.core.db import database_url

STREAMS = 200
LISTENER = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE datname = current_database() AND query LIKE 'LISTEN flowpay_payment_changes%'"
)
# It measures when wake-ups happen: a loaded machine's scheduling would blur that.
pytestmark = pytest.mark.serial


async def _wait(condition: Any, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _wake_times_after_reconnect(settings: Settings, db: Conn) -> list[float]:
    """When each of STREAMS subscribers was woken after the feed's connection was cut."""
    loop = asyncio.get_running_loop()
    feed = ChangeFeed(database_url(settings, "api"), retry_s=0.05, wake_window_s=60)
    with contextlib.ExitStack() as subscribed:
        events = [subscribed.enter_context(feed.subscribe(f"pay_{n}")) for n in range(STREAMS)]
        feed.start()
        try:
            await _wait(lambda: all(e.is_set() for e in events))  # the first connection's
            for event in events:
                event.clear()
            [(listener,)] = db.execute(LISTENER).fetchall()
            cut = loop.time()
            db.execute("SELECT pg_terminate_backend(%s)", (listener,))
            woken: list[float] = []

            async def record(event: asyncio.Event) -> None:
                await event.wait()
                woken.append(loop.time() - cut)

            await asyncio.wait_for(asyncio.gather(*(record(e) for e in events)), 60)
        finally:
            await feed.stop()
    return woken


def test_streams_are_woken_spread_over_time_after_the_feed_reconnects(
    settings: Settings, db: Conn
) -> None:
    woken = asyncio.run(_wake_times_after_reconnect(settings, db))
    assert len(woken) == STREAMS
    window = STREAMS / WAKE_ALL_PER_S
    # Spread over the window their number needs, not in one burst.
    assert max(woken) - min(woken) >= window / 2, sorted(woken)
    first_tenth = [t for t in woken if t - min(woken) < window / 10]
    assert len(first_tenth) <= STREAMS / 4, sorted(woken)
