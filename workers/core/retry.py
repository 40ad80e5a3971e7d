"""Retry timing for the whole code base, from one library (tenacity).

One shape of backoff everywhere: exponential, doubling from a first delay up to a cap, each
delay drawn uniformly below that bound ("full jitter"), so that many clients retrying after
one outage do not come back in step.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

T = TypeVar("T")


def jittered(first_s: float, max_s: float) -> wait_random_exponential:
    """A tenacity wait: below ``first_s`` at first, the bound doubling up to ``max_s``."""
    return wait_random_exponential(multiplier=first_s, max=max_s)


def delays(first_s: float, max_s: float) -> Iterator[float]:
    """The same delays one after another, endless, for loops that do their own sleeping."""
    wait = jittered(first_s, max_s)
    state = RetryCallState(Retrying(), None, (), {})
    for attempt in itertools.count(1):
        state.attempt_number = attempt
        yield wait(state)


async def retried(
    call: Callable[[], Awaitable[T]],
    errors: type[Exception],
    *,
    attempts: int,
    first_s: float,
    max_s: float,
) -> T:
    """``call()`` until it returns, at most ``attempts`` times while it raises ``errors``, with
    the one backoff between attempts; the last error is raised."""
    return await first_then(
        lambda: AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=jittered(first_s, max_s),
            retry=retry_if_exception_type(errors),
            reraise=True,
        ),
        call,
    )


async def first_then(retrying: Callable[[], AsyncRetrying], call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` under the policy ``retrying()`` makes, its first attempt bare: nearly every
    call succeeds at once, and tenacity's controller costs as much CPU as a small call's own
    work, so only a failure builds one.

    The failed first attempt is handed to the policy as its own first attempt, raising the same
    error, so the policy sees what it would have seen (its traceback then shows the second
    call's frames too)."""
    try:
        return await call()
    except Exception as exc:
        first: Exception | None = exc

    async def attempt() -> T:  # a coroutine function: tenacity awaits only those
        nonlocal first
        if first is not None:
            error, first = first, None
            raise error
        return await call()

    result: T = await retrying()(attempt)
    return result
