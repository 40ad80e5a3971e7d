"""The consumer loop for handlers that run many messages at once (asyncio).

Messages with the same key (one payment) run one after another in offset order; messages with
different keys run concurrently, up to ``max_in_flight``. Outcomes follow the same rules as the
synchronous runner (``workers.core.delivery``). A partition's offset is committed only below its
lowest unfinished message, so a crash redelivers whatever had not finished.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from workers.core.config import KafkaRole, Settings
from workers.core.consuming.tracker import OffsetTracker
from workers.core.delivery import (
    DeadLetters,
    Verdicts,
    headers_of,
    offset_of,
    partition_of,
    retry_delays,
    topic_of,
)
from workers.core.errors import TransientError
from workers.core.events import Event, decode
from workers.core.heartbeat import Heartbeat
from workers.core.kafka import (
    Consumer,
    Message,
    TopicPartition,
    commit_offsets,
    consume_ready,
    log_consumer_error,
    make_consumer,
)
from workers.core.metrics import DEAD_LETTER, OK, RETRY, LagProbe, handled
from workers.core.observe import consuming
from workers.core.topics import topics

log = logging.getLogger(__name__)

AsyncHandler = Callable[[Event, Message], Awaitable[None]]
# False for a message the handler would do nothing with: it is passed over, never decoded.
Wants = Callable[[Message], bool]
Partition = tuple[str, int]
COMMIT_EVERY_S = 0.5


class AsyncConsumerRunner:
    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        role: KafkaRole,
        handler: AsyncHandler,
        max_in_flight: int,
        subscribe_to: list[str] | None = None,
        wants: Wants | None = None,
    ) -> None:
        self.settings = settings
        self.group = group
        self.role = role
        self.handler = handler
        self.max_in_flight = max_in_flight
        self.wants = wants
        self.subscribe_to = subscribe_to or [topics(settings).payments]
        self.dead_letters = DeadLetters(settings, group, role)
        self.tracker = OffsetTracker()
        self._tails: dict[bytes | None, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._lag = LagProbe(group)

    async def run(self, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        consumer = make_consumer(self.settings, self.group, self.role)
        consumer.subscribe(
            self.subscribe_to,
            on_revoke=lambda c, parts: self._on_revoke(loop, c, parts),
            on_lost=lambda c, parts: self.tracker.forget([(p.topic, p.partition) for p in parts]),
        )
        heartbeat = Heartbeat(self.role)
        last_commit = time.monotonic()
        log.info(
            "%s consuming %s as group %s (%d at once)",
            self.role, self.subscribe_to, self.group, self.max_in_flight,
        )  # fmt: skip
        try:
            while not stop.is_set():
                heartbeat.beat()
                await self._poll(loop, consumer)
                if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                    await loop.run_in_executor(None, self._commit, consumer)
                    await loop.run_in_executor(None, self._lag.observe, consumer)
                    last_commit = time.monotonic()
            await self._drain(self.settings.worker.grace_period_s)
            await loop.run_in_executor(None, self._commit, consumer)
        finally:
            self._stop.set()
            for task in self._tasks:
                task.cancel()
            await loop.run_in_executor(None, consumer.close)
            self.dead_letters.close()

    async def _poll(self, loop: asyncio.AbstractEventLoop, consumer: Consumer) -> None:
        room = self.max_in_flight - len(self._tasks)
        if room <= 0:
            await asyncio.wait(self._tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            return
        batch = await loop.run_in_executor(
            None, consume_ready, consumer, min(room, self.settings.worker.batch_size), 0.1
        )
        for message in batch:
            error = message.error()
            if error is not None:
                log_consumer_error(self.role, error)
                continue
            if self.wants is not None and not self.wants(message):
                self._pass_over(message)
                continue
            self._schedule(message)
        if not batch:
            await asyncio.sleep(0)

    def _pass_over(self, message: Message) -> None:
        # Done at once: its offset is committed with the ones around it, and it holds no slot.
        partition = (topic_of(message), partition_of(message))
        self.tracker.started(partition, offset_of(message))
        self.tracker.finished(partition, offset_of(message))

    def _schedule(self, message: Message) -> None:
        partition = (topic_of(message), partition_of(message))
        offset = offset_of(message)
        self.tracker.started(partition, offset)
        key = message.key()
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run_after(previous, message, partition, offset))
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, key))

    def _done(self, task: asyncio.Task[None], key: bytes | None) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _run_after(
        self,
        previous: asyncio.Task[None] | None,
        message: Message,
        partition: Partition,
        offset: int,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # the same payment's earlier message comes first
        with consuming(self.role, message):
            if await self._process(message):
                self.tracker.finished(partition, offset)

    async def _process(self, message: Message) -> bool:
        """True once the message is done (handled or dead-lettered); False if stopped first."""
        verdicts = Verdicts(self.settings.worker.max_attempts)
        for delay in retry_delays(self.settings.worker.retry_max_backoff_s):
            started = time.perf_counter()
            try:
                await self.handler(decode(message.value(), headers_of(message)), message)
                handled(self.group, OK, started)
                return True
            except Exception as exc:
                log.warning("%s: handler failed (%r); deciding", self.role, exc)
                if verdicts.dead_letter(exc) and await self._dead_letter(message, exc):
                    handled(self.group, DEAD_LETTER, started)
                    return True
                handled(self.group, RETRY, started)
            if await self._sleep_or_stop(delay):
                return False
        return False

    async def _dead_letter(self, message: Message, exc: BaseException) -> bool:
        try:
            await asyncio.to_thread(self.dead_letters.send, message, exc)
        except TransientError as unreachable:
            log.warning("%s: dead-letter topic unreachable: %s", self.role, unreachable)
            return False
        return True

    async def _sleep_or_stop(self, delay: float) -> bool:
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def _drain(self, grace_s: float) -> None:
        if self._tasks:
            log.info("%s draining %d messages in flight", self.role, len(self._tasks))
            await asyncio.wait(self._tasks, timeout=grace_s)

    def _commit(self, consumer: Consumer) -> None:
        ready = self.tracker.committable()
        if not ready:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in ready.items()]
        if commit_offsets(consumer, offsets, role=self.role):
            self.tracker.mark_committed(ready)

    def _on_revoke(
        self, loop: asyncio.AbstractEventLoop, consumer: Consumer, parts: list[Any]
    ) -> None:
        # Runs on the polling thread: finish what the revoked partitions have in flight, then
        # commit them, so the next owner starts exactly where this one stopped.
        revoked = [(p.topic, p.partition) for p in parts]
        future = asyncio.run_coroutine_threadsafe(
            self._drain(self.settings.worker.grace_period_s), loop
        )
        future.result()
        self._commit(consumer)
        self.tracker.forget(revoked)
