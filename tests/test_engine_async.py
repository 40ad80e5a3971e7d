"""The consumer engine with async handlers and several batches in flight, on real Kafka."""

from __future__ import annotations

import asyncio
import random
import threading

from tests.conftest import override
from tests.helpers.engine import GROUP, AsyncRecorder, amount, event, run_until, running, subscriber
from tests.helpers.kafka import committed_total, headers_of, produce_events, produce_raw, read_topic
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.consuming import Batch
from workers.core.errors import TransientError
from workers.core.topics import topics


def quick(settings: Settings, batch_size: int = 5) -> Settings:
    values = {"max_attempts": 2, "retry_max_backoff_s": 0.2, "poll_timeout_s": 0.2}
    return override(settings, "worker", batch_size=batch_size, **values)


def test_one_key_in_order_and_never_twice_at_once_other_keys_concurrently(
    settings: Settings,
) -> None:
    settings = quick(settings)  # small batches: many in flight, a key's events spread over them
    sent = [event(n, payment=f"pay_{n % 6}") for n in range(60)]
    produce_events(settings, sent)
    running_keys: list[str] = []
    overlaps: list[str] = []
    peak = 0

    async def work(batch: Batch) -> None:
        nonlocal peak
        keys = [e.payment_id for e in batch.events]
        overlaps.extend(k for k in set(keys) if k in running_keys)
        running_keys.extend(keys)
        peak = max(peak, len(set(running_keys)))
        await asyncio.sleep(random.uniform(0.001, 0.03))
        for key in keys:
            running_keys.remove(key)

    recorder = AsyncRecorder(work)
    run_until(settings, subscriber(recorder, max_in_flight=8), lambda: len(recorder.events) == 60)
    assert overlaps == [], "two events of one payment were handled at once"
    for n in range(6):
        amounts = [amount(e) for e in recorder.events if e.payment_id == f"pay_{n}"]
        assert amounts == sorted(amounts), f"pay_{n} out of order: {amounts}"
    assert peak > 1, "different payments should run at once"
    assert committed_total(settings, GROUP, topics(settings).payments) == 60


def test_a_slow_batch_holds_back_only_its_partitions_commit(settings: Settings) -> None:
    settings = quick(settings, batch_size=1)
    produce_events(settings, [event(n) for n in range(10)], key=b"one-partition")
    release = threading.Event()
    slow = 105

    async def work(batch: Batch) -> None:
        if any(amount(e) == slow for e in batch.events):
            while not release.is_set():
                await asyncio.sleep(0.01)

    recorder = AsyncRecorder(work)
    payments = topics(settings).payments
    with running(settings, subscriber(recorder, max_in_flight=8)):
        wait_for(lambda: len(recorder.events) == 5, what="the events before the slow one")
        # The same key waits behind the slow one; nothing at or past it is committed.
        assert [amount(e) for e in recorder.events] == [100, 101, 102, 103, 104]
        wait_for(lambda: committed_total(settings, GROUP, payments) == 5)
        other = event(200)
        produce_events(settings, [other], key=b"other-key")
        wait_for(lambda: other in recorder.events, what="another key")
        assert slow not in [amount(e) for e in recorder.events]
        assert committed_total(settings, GROUP, payments) <= 6  # 5 here (+1 if elsewhere)
        release.set()
        wait_for(lambda: len(recorder.events) == 11)
        wait_for(lambda: committed_total(settings, GROUP, payments) == 11)


def test_bad_messages_dead_lettered_transient_errors_retried(settings: Settings) -> None:
    settings = quick(settings)
    names = topics(settings)
    produce_raw(settings, names.payments, [b"garbage"], key=b"k")
    produce_events(settings, [event(1), event(2)], key=b"k")
    calls: list[int] = []

    async def work(batch: Batch) -> None:
        amounts = [amount(e) for e in batch.events]
        calls.extend(amounts)
        if 101 in amounts and calls.count(101) < 4:
            raise TransientError("briefly away")
        if 102 in amounts:
            raise ValueError("a bug")

    recorder = AsyncRecorder(work)
    run_until(
        settings,
        subscriber(recorder),
        lambda: committed_total(settings, GROUP, names.payments) == 3,
    )
    dead = read_topic(settings, names.dead_letters, 2)
    assert sorted(headers_of(m)["dlq_error_type"] for m in dead) == ["MalformedEvent", "ValueError"]
    assert calls.count(101) >= 4
    assert [amount(e) for e in recorder.events] == [101]


def test_a_stop_leaves_unfinished_events_uncommitted(settings: Settings) -> None:
    settings = quick(settings)
    produce_events(settings, [event(n) for n in range(5)], key=b"k")
    started = threading.Event()

    async def never_finishes(_batch: Batch) -> None:
        started.set()
        raise TransientError("gateway down")

    with running(settings, subscriber(AsyncRecorder(never_finishes), max_in_flight=8)):
        assert started.wait(30)
    assert committed_total(settings, GROUP, topics(settings).payments) == 0
