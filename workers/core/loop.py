"""The event loop every asynchronous role runs on.

uvloop (libuv, in C) where it is installed, as uvicorn already runs the API: the workers spend
much of their time in the loop's own bookkeeping (ready handles, socket writes, selector
polls), and uvloop does that several times cheaper than the standard loop. Without it (a
platform it does not build on), the standard loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - every supported Linux and macOS has a wheel
        return None
    return uvloop.new_event_loop


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a new loop in this thread (as ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=_factory()) as runner:
        return runner.run(main)
