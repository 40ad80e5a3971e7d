"""Retry timing for the whole code base, from one library (tenacity).

One shape of backoff everywhere: exponential, doubling from a first delay up to a cap, each
delay drawn uniformly below that bound ("full jitter"), so that many clients retrying after
one outage do not come back in step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from tenacity import RetryCallState, Retrying, wait_random_exponential


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
