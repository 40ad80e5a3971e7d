"""A wake-up call from the intake thread to the sender's event loop (one process, two threads).

The intake signals when it has committed new deliveries, so the sender claims them at once
instead of on its next poll; the poll stays for retries coming due and for deliveries another
notifier process recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Wakeup:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._early = False  # set before the sender was there to hear it

    def bind(self) -> None:
        """Attach to the running event loop (the sender's)."""
        event = asyncio.Event()
        with self._lock:
            self._loop, self._event = asyncio.get_running_loop(), event
            if self._early:
                event.set()

    def set(self) -> None:
        """Wake the sender; safe from any thread."""
        with self._lock:
            loop, event = self._loop, self._event
            if loop is None or event is None:
                self._early = True
                return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout_s: float) -> None:
        """Until woken or ``timeout_s`` passed, whichever comes first."""
        if self._event is None:
            await asyncio.sleep(timeout_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        self._event.clear()
