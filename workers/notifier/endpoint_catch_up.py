"""The intake's wait for the endpoint changes published before its batch.

Endpoint changes and payment events come on different topics, to different consumers of the
notifier (``endpoint_changes`` and the intake). Without a wait, the intake could take a
payment's outcome before the change that created an endpoint, or made it want that event, is
applied, and record no delivery to it: a webhook lost.

So before a batch that notifies, the intake waits until group ``notifier-endpoints`` has
committed, on every partition of the endpoints' topic, at least the end offsets read after the
batch was polled. That group commits only what it has applied, so every change published before
those ends is applied. A change made before a payment is among them: the relay publishes the
API's writes in the order they were committed, each batch acknowledged whole before it takes
the next outbox, where the payment's outcome (the processor's) is.

A check is one ListOffsets request for the ends, and an OffsetFetch for the group's offsets
only when what it has been seen to commit falls short of them (committed offsets only grow). One
check covers every batch polled before it began.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Final

from confluent_kafka import OFFSET_END
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from workers.core.config import Settings
from workers.core.errors import TransientError
from workers.core.kafka import (
    Consumer,
    KafkaException,
    TopicPartition,
    coordinator_settling,
    group_id,
    leadership_settling,
    make_consumer,
)
from workers.core.topics import GROUP_NOTIFIER_ENDPOINTS, topics
from workers.notifier import metrics

# Past this, the batch is retried later (a transient error): the endpoint changes' consumer is
# starting, rebalancing or behind.
WAIT_S: Final = 30.0
# How often the group's offsets are read again while it is behind; its commits come every
# half second (``workers.core.consuming.offsets``).
RECHECK_S: Final = 0.05
# How long the topic's partitions are taken as known: a partition added is seen this late.
PARTITIONS_KEPT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 5.0


class EndpointsBehind(TransientError):
    """The endpoint changes published before a batch were not all applied in time."""


class EndpointCatchUp:
    def __init__(self, settings: Settings) -> None:
        self.topic = topics(settings).webhook_endpoints
        self.group = group_id(settings, GROUP_NOTIFIER_ENDPOINTS)
        # In the group, to read its committed offsets; it never subscribes, so never joins it.
        self.consumer: Consumer = make_consumer(settings, GROUP_NOTIFIER_ENDPOINTS, "notifier")
        self._lock = asyncio.Lock()
        self._covered = float("-inf")  # when the last check that passed began
        self._reached: dict[int, int] = {}  # the highest offset seen committed, by partition
        self._partitions: list[int] = []
        self._partitions_read = float("-inf")

    async def since(self, polled: float) -> None:
        """Return once every endpoint change published before ``polled`` (a
        ``time.monotonic()``) is applied; EndpointsBehind after ``WAIT_S``."""
        async with self._lock:
            if self._covered >= polled:
                return
            began = time.monotonic()
            try:
                await self._wait()
            except KafkaException as exc:  # retried, as the rest of a broker outage is
                raise EndpointsBehind(f"cannot read the endpoint changes' offsets: {exc}") from exc
            self._covered = began

    def close(self) -> None:
        self.consumer.close()

    async def _wait(self) -> None:
        ends: dict[int, int] | None = None  # read once: changes made since need not wait
        waiting = False
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_worth_waiting),
                wait=wait_fixed(RECHECK_S),
                stop=stop_after_delay(WAIT_S),
                reraise=True,
            ):
                with attempt:
                    if ends is None:
                        ends = await asyncio.to_thread(self._ends)
                    behind = _behind(ends, self._reached)
                    if behind:
                        self._learn(await asyncio.to_thread(self._committed, sorted(behind)))
                        behind = _behind(ends, self._reached)
                    if behind:
                        if not waiting:
                            metrics.WAITING_FOR_ENDPOINTS.inc()
                            waiting = True
                        raise EndpointsBehind(
                            f"endpoint changes not applied within {WAIT_S:g}s: group"
                            f" {self.group} is behind on {self.topic} partitions {sorted(behind)}"
                        )
        finally:
            if waiting:
                metrics.WAITING_FOR_ENDPOINTS.dec()

    def _learn(self, committed: Mapping[int, int]) -> None:
        for partition, offset in committed.items():
            self._reached[partition] = max(self._reached.get(partition, 0), offset)

    def _ends(self) -> dict[int, int]:
        """The end offset of each partition of the topic, read now: OFFSET_END as the time
        asks for each partition's latest offset, all in one request per leader."""
        wanted = [TopicPartition(self.topic, p, OFFSET_END) for p in self._known()]
        found = self.consumer.offsets_for_times(wanted, timeout=REQUEST_TIMEOUT_S)
        return _offsets(found)

    def _committed(self, partitions: list[int]) -> dict[int, int]:
        wanted = [TopicPartition(self.topic, p) for p in partitions]
        return _offsets(self.consumer.committed(wanted, timeout=REQUEST_TIMEOUT_S))

    def _known(self) -> list[int]:
        if time.monotonic() - self._partitions_read > PARTITIONS_KEPT_S:
            metadata = self.consumer.list_topics(self.topic, timeout=REQUEST_TIMEOUT_S)
            topic = metadata.topics[self.topic]
            if topic.error is not None:
                raise KafkaException(topic.error)
            self._partitions = sorted(topic.partitions)
            self._partitions_read = time.monotonic()
        return self._partitions


def _offsets(found: list[TopicPartition]) -> dict[int, int]:
    for tp in found:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return {tp.partition: int(tp.offset) for tp in found}


def _worth_waiting(exc: BaseException) -> bool:
    """Behind, or a broker settling: a partition's leader (a topic just created), the group's
    coordinator (a broker just started)."""
    return isinstance(exc, EndpointsBehind) or leadership_settling(exc) or coordinator_settling(exc)


def _behind(ends: Mapping[int, int], reached: Mapping[int, int]) -> set[int]:
    """The partitions whose committed offset is short of their end; a group that never
    committed on a partition (a negative offset) has applied nothing of it."""
    return {p for p, end in ends.items() if max(reached.get(p, 0), 0) < end}
