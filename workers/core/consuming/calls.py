"""One handler call, as the one policy says: done, retried, split, or dead-lettered.

    the call returns                      -> its events are done (their offsets may advance)
    it raises a transient error           -> the same call again after a backoff, without limit
    it raises anything else (2+ events)   -> each event alone, so only the culprit meets:
    an event alone raises                 -> the verdict (``workers.core.delivery.Verdicts``):
                                             retry after a backoff, or dead-letter it (done)

Backoffs (tenacity's, full jitter) wait on the engine's stop: a stop during one ends the call at
once, unfinished (``Stopped``), and nothing of it is committed. A handler call must be all or
nothing (one transaction) or idempotent per event, since a failed batch is taken again alone.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from workers.core import metrics, observe
from workers.core.config import WorkerSettings
from workers.core.consuming.batch import Batch, Received
from workers.core.consuming.offsets import KafkaOffsets, StoredOffsets
from workers.core.consuming.routing import Handler
from workers.core.delivery import FIRST_RETRY_S, TRANSIENT, DeadLetters, Verdicts
from workers.core.kafka import Message
from workers.core.retry import first_then, jittered

log = logging.getLogger(__name__)

Offsets = KafkaOffsets | StoredOffsets
Work = Callable[[Batch], Awaitable[None]]


class Stopped(Exception):
    """The engine is stopping: the call in hand ends unfinished, and is not committed."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


class Caller:
    """Makes handler calls for one engine: the subscriber's handlers object, its offsets, its
    dead letters, its stop."""

    def __init__(
        self,
        *,
        group: str,
        role: str,
        handlers: object,
        offsets: Offsets,
        dead_letters: DeadLetters,
        worker: WorkerSettings,
        stopping: asyncio.Event,
        pool: ThreadPoolExecutor,
        spans: bool = True,
    ) -> None:
        self.group = group
        self.role = role
        self.handlers = handlers
        self.offsets = offsets
        self.dead_letters = dead_letters
        self.worker = worker
        self.stopping = stopping
        self.pool = pool
        self.spans = spans
        self._works: dict[Handler[Any], Work] = {}

    async def call(self, handler: Handler[Any], items: Sequence[Received]) -> None:
        """Hand ``items`` to ``handler`` until they are done; raises Stopped."""
        work = self._work(handler)
        if len(items) > 1 and await self._together(work, items):
            return
        for item in items:
            if not self.offsets.stale(item):
                await self.alone(work, item)

    async def _together(self, work: Work, items: Sequence[Received]) -> bool:
        """All of ``items`` in one call; False when it failed other than transiently (logged
        as split: each event is then taken alone)."""
        try:
            await self._retried(work, items, is_transient, "ok", failed="split")
        except Stopped:
            raise
        except Exception:
            return False
        return True

    async def alone(self, work: Work, item: Received) -> None:
        """One event until the verdict: done, or dead-lettered."""
        verdicts = Verdicts(self.worker.max_attempts)
        try:
            retry_if = lambda exc: not verdicts.dead_letter(exc)  # noqa: E731
            await self._retried(work, [item], retry_if, "ok", failed="given up")
        except Stopped:
            raise
        except Exception as exc:
            await self.dead_letter(item, exc)

    async def dead_letter(self, item: Received, exc: BaseException) -> None:
        """To the dead-letter topic (and, for a store, recorded with its offset): done."""
        store = self.offsets.store if isinstance(self.offsets, StoredOffsets) else None

        async def send(batch: Batch) -> None:
            await asyncio.to_thread(self.dead_letters.send, item.message, exc)
            if store is not None:
                await asyncio.to_thread(store.reject, batch, exc)

        # Whatever stops it (Kafka or the database away), it is retried: there is nowhere
        # further to put it.
        await self._retried(send, [item], lambda _exc: True, metrics.DEAD_LETTER, failed="")

    def send_dead_letter(self, message: Message, exc: BaseException) -> None:
        """The dead-letter sink handlers are given (``Batch.dead_letter``)."""
        self.dead_letters.send(message, exc)
        metrics.counted(self.group, metrics.DEAD_LETTER)

    def _work(self, handler: Handler[Any]) -> Work:
        work = self._works.get(handler)
        if work is None:
            work = self._works[handler] = self._make_work(handler)
        return work

    def _make_work(self, handler: Handler[Any]) -> Work:
        if inspect.iscoroutinefunction(handler):

            async def on_the_loop(batch: Batch) -> None:
                await handler(self.handlers, batch)

            return on_the_loop

        async def in_a_thread(batch: Batch) -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.pool, handler, self.handlers, batch)

        return in_a_thread

    async def _retried(
        self,
        work: Work,
        items: Sequence[Received],
        retry_if: Callable[[BaseException], bool],
        outcome: str,
        *,
        failed: str,
    ) -> None:
        """``work`` on a fresh batch of ``items`` until it returns or ``retry_if`` says no:
        then its last error is raised, logged as ``failed`` (and counted as a retry when that
        is "split": its events are tried again alone). Each attempt is timed and logged."""
        messages = [item.message for item in items]
        attempt = _Attempt()

        async def once() -> None:
            attempt.start()
            attempt.batch = self.offsets.batch(items, self.send_dead_letter)
            await work(attempt.batch)

        def retrying_after(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            metrics.handled(self.group, metrics.RETRY, attempt.started, len(items))
            observe.handled_batch(self.role, "retry", messages, attempt.started_ns, error)

        def retrying() -> AsyncRetrying:
            return AsyncRetrying(
                wait=jittered(FIRST_RETRY_S, self.worker.retry_max_backoff_s),
                # Only a handler's errors meet the policy; a cancellation (or a crash) goes
                # through.
                retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and retry_if(exc)),
                sleep=self._sleep,
                before_sleep=retrying_after,
                reraise=True,
            )

        try:
            await first_then(retrying, once)
        except Stopped:
            raise
        except Exception as exc:
            if failed == "split":
                metrics.handled(self.group, metrics.RETRY, attempt.started, len(items))
            observe.handled_batch(self.role, failed, messages, attempt.started_ns, exc)
            raise
        metrics.handled(self.group, outcome, attempt.started, len(items))
        observe.handled_batch(self.role, outcome, messages, attempt.started_ns, spans=self.spans)
        assert attempt.batch is not None
        self.offsets.finished(attempt.batch)

    async def _sleep(self, seconds: float) -> None:
        """A backoff that a stop cuts short, raising Stopped."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return
        raise Stopped


class _Attempt:
    """The attempt in hand of one ``_retried``: when it began, and its batch."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.started_ns = time.time_ns()
        self.batch: Batch | None = None

    def start(self) -> None:
        self.started = time.perf_counter()
        self.started_ns = time.time_ns()
