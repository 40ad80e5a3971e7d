"""The one retry helper: a bare first attempt, then the backoff schedule, then the last error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_none

from workers.core.retry import delays, first_then, retried


class Flaky(Exception):
    pass


def calls_failing(
    times: int, error: BaseException
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """A plain function returning a coroutine (as a lambda would), failing ``times`` first."""
    made: list[int] = []

    async def answer() -> str:
        made.append(len(made) + 1)
        if len(made) <= times:
            raise error
        return f"answered at {len(made)}"

    return made, lambda: answer()


def test_a_call_that_answers_at_once_is_made_once() -> None:
    made, call = calls_failing(0, Flaky())
    answer = asyncio.run(retried(call, Flaky, attempts=4, first_s=0.001, max_s=0.002))
    assert (answer, made) == ("answered at 1", [1])


def test_failures_are_retried_until_it_answers() -> None:
    made, call = calls_failing(2, Flaky())
    answer = asyncio.run(retried(call, Flaky, attempts=4, first_s=0.001, max_s=0.002))
    assert (answer, made) == ("answered at 3", [1, 2, 3])


def test_after_the_last_attempt_its_error_is_raised() -> None:
    made, call = calls_failing(10, Flaky("still down"))
    with pytest.raises(Flaky, match="still down"):
        asyncio.run(retried(call, Flaky, attempts=3, first_s=0.001, max_s=0.002))
    assert made == [1, 2, 3]


def test_one_attempt_means_no_retry() -> None:
    made, call = calls_failing(10, Flaky())
    with pytest.raises(Flaky):
        asyncio.run(retried(call, Flaky, attempts=1, first_s=0.001, max_s=0.002))
    assert made == [1]


def test_other_errors_are_not_retried() -> None:
    made, call = calls_failing(10, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(retried(call, Flaky, attempts=5, first_s=0.001, max_s=0.002))
    assert made == [1]


def test_the_delays_double_their_bound_up_to_the_cap() -> None:
    bounds = [0.1, 0.2, 0.4, 0.5, 0.5]
    for _ in range(50):
        drawn = list(zip(delays(0.1, 0.5), bounds, strict=False))
        assert all(0 <= delay <= bound for delay, bound in drawn)


def test_a_policy_is_built_only_once_a_first_attempt_failed() -> None:
    built: list[AsyncRetrying] = []

    def policy() -> AsyncRetrying:
        built.append(AsyncRetrying(stop=stop_after_attempt(3), wait=wait_none(), reraise=True))
        return built[-1]

    made, call = calls_failing(0, Flaky())
    assert asyncio.run(first_then(policy, call)) == "answered at 1"
    assert (made, built) == ([1], [])


def test_the_policy_sees_a_failed_first_attempt_as_its_own_first() -> None:
    made, call = calls_failing(2, Flaky())
    seen: list[tuple[int, str]] = []

    def noted(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        seen.append((state.attempt_number, type(error).__name__))

    def policy() -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(5), wait=wait_none(), before_sleep=noted, reraise=True
        )

    assert asyncio.run(first_then(policy, call)) == "answered at 3"
    assert made == [1, 2, 3]  # the failed first attempt is not made again
    assert seen == [(1, "Flaky"), (2, "Flaky")]
