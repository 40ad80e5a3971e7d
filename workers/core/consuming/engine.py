"""The poll loop: messages in, units of work out, offsets back (see the package docstring)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from workers.core import metrics
from workers.core.config import Settings
from workers.core.consuming.batch import Partition, Received, ends_of, raw_headers, receive
from workers.core.consuming.calls import Caller, Stopped
from workers.core.consuming.offsets import KafkaOffsets, StoredOffsets
from workers.core.consuming.routing import IGNORE, Handler, calls
from workers.core.consuming.subscriber import Subscriber
from workers.core.delivery import DeadLetters
from workers.core.errors import EventError
from workers.core.events import header
from workers.core.heartbeat import Heartbeat
from workers.core.kafka import (
    Consumer,
    Message,
    TopicPartition,
    consume_ready,
    log_consumer_error,
    make_consumer,
)
from workers.core.loop import run_async
from workers.core.metrics import LagProbe
from workers.core.threads import name_native
from workers.core.topics import topics

log = logging.getLogger(__name__)

T = TypeVar("T")
# How often a full engine looks whether a unit finished, and the stop watcher at the stop event.
WAIT_SLICE_S: Final = 0.5
STOP_CHECK_S: Final = 0.05


class Unit:
    """Part of one poll batch, run as one task: its handler calls, one after another.

    ``after``: the units that held some of its keys when it was made; it starts once they are
    done, and not at all if one of them ended unfinished (its key's earlier event comes first).
    """

    __slots__ = ("after", "done", "items", "keys", "task")

    def __init__(self, items: list[Received], after: list[Unit]) -> None:
        self.items = items
        self.keys = {item.key for item in items}
        self.after = after
        self.done = False
        self.task: asyncio.Task[None] | None = None

    @property
    def partitions(self) -> set[Partition]:
        return {item.partition for item in self.items}

    @property
    def ends(self) -> dict[Partition, int]:
        return ends_of(self.items)


class Engine:
    """Runs one ``Subscriber`` until its stop event is set."""

    def __init__(self, settings: Settings, subscriber: Subscriber[Any]) -> None:
        self.settings = settings
        self.subscriber = subscriber
        self.role = subscriber.role
        self.topics = list(subscriber.topics) or [topics(settings).payments]
        self.dead_letters = DeadLetters(settings, subscriber.group, subscriber.principal)
        self.offsets: KafkaOffsets | StoredOffsets = (
            KafkaOffsets(self.role)
            if subscriber.store is None
            else StoredOffsets(subscriber.store, self.role)
        )
        self.stopping = asyncio.Event()
        # Every call on the consumer from one thread, one at a time; handlers in their own.
        self._kafka = ThreadPoolExecutor(
            1, thread_name_prefix=f"{self.role}-kafka", initializer=name_native
        )
        self._pool = ThreadPoolExecutor(
            subscriber.max_in_flight,
            thread_name_prefix=f"{self.role}-handler",
            initializer=name_native,
        )
        self.caller = Caller(
            group=subscriber.group,
            role=self.role,
            handlers=subscriber.handlers,
            offsets=self.offsets,
            dead_letters=self.dead_letters,
            worker=settings.worker,
            stopping=self.stopping,
            pool=self._pool,
            spans=subscriber.spans,
        )
        self._units: set[Unit] = set()
        self._holders: dict[bytes | None, Unit] = {}
        self._failure: BaseException | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None

    @property
    def positions(self) -> dict[Partition, int]:
        """Stored offsets mode: each assigned partition's position, as last sought or applied."""
        if isinstance(self.offsets, StoredOffsets):
            return self.offsets.positions.copy()  # one step: safe from another thread
        return {}

    async def run(self, stop: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        consumer = await self._on_kafka(
            make_consumer, self.settings, self.subscriber.group, self.subscriber.principal
        )
        self._consumer = consumer
        watcher = asyncio.create_task(self._watch(stop))
        try:
            await self._on_kafka(
                consumer.subscribe,
                self.topics,
                on_assign=self.offsets.assigned,
                on_revoke=self._revoked,
                on_lost=lambda _c, parts: self.offsets.lost(parts),
            )
            log.info(
                "%s consuming %s as group %s (%d at once)",
                self.role, self.topics, self.subscriber.group, self.subscriber.max_in_flight,
            )  # fmt: skip
            await self._consume(consumer)
            await self._drain()
            await self._on_kafka(self.offsets.commit, consumer, now=True)
        finally:
            self._closing = True
            watcher.cancel()
            for unit in self._units:
                if unit.task is not None:
                    unit.task.cancel()
            await self._on_kafka(consumer.close)
            await asyncio.to_thread(self.dead_letters.close)
            self._kafka.shutdown(wait=False)
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _consume(self, consumer: Consumer) -> None:
        heartbeat = Heartbeat(self.role)
        lag = LagProbe(self.subscriber.group)
        worker = self.settings.worker
        # Polls in slices, so that a stop is noticed while no message comes.
        poll_s = min(worker.poll_timeout_s, WAIT_SLICE_S)
        while not self.stopping.is_set():
            if self._failure is not None:
                raise self._failure
            heartbeat.beat()
            if len(self._units) >= self.subscriber.max_in_flight:
                await asyncio.wait(
                    self._tasks(self._units),
                    timeout=WAIT_SLICE_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if len(self._units) >= self.subscriber.max_in_flight:
                    # Still full: commit and observe lag while the calls run. With a unit
                    # done, the next poll does both in the same hand-over.
                    await self._on_kafka(self._housekeeping, consumer, lag)
            else:
                batch = await self._on_kafka(self._poll, consumer, lag, worker.batch_size, poll_s)
                if batch:
                    self._dispatch(batch)

    def _poll(
        self, consumer: Consumer, lag: LagProbe, batch_size: int, timeout_s: float
    ) -> list[Message]:
        """On the Kafka thread, in one hand-over (each costs the loop a wake-up): commit and
        observe lag when due, then the next batch; with none, the idle look at the offsets."""
        self._housekeeping(consumer, lag)
        batch = consume_ready(consumer, batch_size, timeout_s)
        if not batch:
            self.offsets.idle(consumer)
        return batch

    def _housekeeping(self, consumer: Consumer, lag: LagProbe) -> None:
        self.offsets.commit(consumer)
        lag.observe(consumer)

    def _dispatch(self, messages: list[Message]) -> None:
        routes = self.subscriber.routes
        wanted: list[Received] = []
        ignored = 0
        for message in messages:
            error = message.error()
            if error is not None:
                log_consumer_error(self.role, error)
                continue
            headers = raw_headers(message)
            if routes.ignores(header(headers, "ce_type")):
                self.offsets.passed_over(message)  # never decoded: nothing is done with it
                ignored += 1
            else:
                item = receive(message, self.subscriber.decode, headers)
                decoded = item.decoded
                if not isinstance(decoded, EventError) and routes.route(decoded.type) is IGNORE:
                    self.offsets.passed_over(message)
                    ignored += 1
                else:
                    wanted.append(item)
        if ignored:  # done, by decision
            metrics.counted(self.subscriber.group, metrics.OK, ignored)
        if not wanted:
            return
        self.offsets.started(wanted)
        # The keys an earlier unit holds wait for it, apart from the rest, which starts now.
        held = {item.key for item in wanted if item.key in self._holders}
        self._start([item for item in wanted if item.key not in held])
        self._start([item for item in wanted if item.key in held])

    def _start(self, items: list[Received]) -> None:
        if not items:
            return
        after = {id(u): u for key in {i.key for i in items} if (u := self._holders.get(key))}
        unit = Unit(items, list(after.values()))
        for key in unit.keys:
            self._holders[key] = unit
        unit.task = asyncio.create_task(self._run(unit))
        self._units.add(unit)
        unit.task.add_done_callback(functools.partial(self._ended, unit))

    def _ended(self, unit: Unit, task: asyncio.Task[None]) -> None:
        self._units.discard(unit)
        for key in unit.keys:
            if self._holders.get(key) is unit:
                del self._holders[key]
        if not task.cancelled() and task.exception() is not None:
            # A fault of the engine's own (the policy catches every handler error): stop.
            self._failure = task.exception()

    async def _run(self, unit: Unit) -> None:
        if unit.after:
            await asyncio.wait(self._tasks(unit.after))
            if not all(u.done for u in unit.after):
                return  # an earlier event of one of its keys did not finish: neither does it
        try:
            for item in self._rejected(unit.items):
                await self.caller.dead_letter(item, item.decoded)  # type: ignore[arg-type]
            for handler, items in self._calls(unit.items):
                await self.caller.call(handler, items)
            unit.done = True
        except Stopped:
            log.info(
                "%s: stopping with %d event(s) of a batch unfinished; they will be delivered again",
                self.role, len(unit.items),
            )  # fmt: skip
            return
        if isinstance(self.offsets, StoredOffsets) and self._consumer is not None:
            await self._on_kafka(self.offsets.settle, self._consumer, unit.ends)

    def _rejected(self, items: list[Received]) -> list[Received]:
        """Undecodable messages the engine dead-letters itself (a store records its own)."""
        if isinstance(self.offsets, StoredOffsets):
            return []
        return [item for item in items if isinstance(item.decoded, EventError)]

    def _calls(self, items: list[Received]) -> list[tuple[Handler[Any], list[Received]]]:
        routes = self.subscriber.routes
        if isinstance(self.offsets, StoredOffsets):
            return [(routes.handlers[0], items)]  # undecodable ones included, to be recorded
        decoded = [item for item in items if not isinstance(item.decoded, EventError)]
        return calls(decoded, lambda item: routes.handler(item.envelope.type))

    async def _drain(self) -> None:
        tasks = self._tasks(self._units)
        if not tasks:
            return
        grace = self.settings.worker.grace_period_s
        budget = max(grace - min(2.0, grace / 4), 0.0)  # the rest is for the commit and close
        log.info("%s: draining %d batch(es) in hand (up to %.1fs)", self.role, len(tasks), budget)
        _done, pending = await asyncio.wait(tasks, timeout=budget)
        if pending:
            log.warning(
                "%s: %d batch(es) unfinished; they will be delivered again", self.role, len(pending)
            )

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # On the Kafka thread, inside a poll: finish what the revoked partitions have in hand
        # (up to the grace period), then give them up.
        if not self._closing and self._loop is not None:
            revoked = {(tp.topic, tp.partition) for tp in partitions}
            asyncio.run_coroutine_threadsafe(self._finish(revoked), self._loop).result()
        self.offsets.revoked(consumer, partitions)

    async def _finish(self, partitions: set[Partition]) -> None:
        tasks = self._tasks(u for u in self._units if u.partitions & partitions)
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.worker.grace_period_s)

    async def _watch(self, stop: threading.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(STOP_CHECK_S)
        self.stopping.set()  # cuts every backoff short

    async def _on_kafka(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kafka, functools.partial(fn, *args, **kwargs))

    @staticmethod
    def _tasks(units: Iterable[Unit]) -> list[asyncio.Task[None]]:
        return [u.task for u in units if u.task is not None]


def run(settings: Settings, subscriber: Subscriber[Any], stop: threading.Event) -> None:
    """Run ``subscriber`` until ``stop`` is set (in its own event loop, in this thread)."""
    run_async(Engine(settings, subscriber).run(stop))
