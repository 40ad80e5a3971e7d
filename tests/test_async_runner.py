from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable

from tests.conftest import override
from tests.helpers.kafka import committed_total, headers_of, produce_raw, read_topic
from tests.test_runner import GROUP, event, publish, quick
from workers.core.async_runner import AsyncConsumerRunner, OffsetTracker, Wants
from workers.core.config import Settings
from workers.core.errors import TransientError
from workers.core.events import Event, Initiated
from workers.core.kafka import Message
from workers.core.topics import topics


def run_async_until(
    settings: Settings,
    handler: Callable[[Event, Message], Awaitable[None]],
    done: Callable[[], bool],
    max_in_flight: int = 64,
    wants: Wants | None = None,
) -> None:
    stop = threading.Event()
    runner = AsyncConsumerRunner(
        settings,
        group=GROUP,
        role="test",
        handler=handler,
        max_in_flight=max_in_flight,
        wants=wants,
    )
    thread = threading.Thread(target=lambda: asyncio.run(runner.run(stop)))
    thread.start()
    deadline = time.monotonic() + 60
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert done(), "the runner did not get there in time"


def test_tracker_commits_below_the_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    part = ("t", 0)
    for offset in (10, 11, 12):
        tracker.started(part, offset)
    tracker.finished(part, 11)
    tracker.finished(part, 12)
    assert tracker.committable() == {part: 10}
    tracker.finished(part, 10)
    assert tracker.committable() == {part: 13}
    tracker.mark_committed({part: 13})
    assert tracker.committable() == {}


def test_messages_the_handler_does_not_want_are_passed_over_and_committed(
    settings: Settings,
) -> None:
    settings = quick(settings)
    sent = [event(n) for n in range(6)]
    publish(settings, sent, key=b"k")
    seen: list[Event] = []

    async def handler(e: Event, _m: Message) -> None:
        seen.append(e)

    def even(message: Message) -> bool:
        return int(json.loads(message.value() or b"{}")["data"]["amount"]) % 2 == 0

    payments = topics(settings).payments
    run_async_until(
        settings,
        handler,
        lambda: len(seen) == 3 and committed_total(settings, GROUP, payments) == 6,
        wants=even,
    )
    assert seen == sent[::2]


def test_same_key_in_order_different_keys_concurrently(settings: Settings) -> None:
    settings = quick(settings)
    sent = [event(n) for n in range(60)]
    keys = [f"pay_{n % 6}".encode() for n in range(60)]
    for key in set(keys):
        publish(settings, [e for e, k in zip(sent, keys, strict=True) if k == key], key=key)
    seen: list[tuple[bytes, int]] = []
    running = 0
    peak = 0

    async def handler(e: Event, message: Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(random.uniform(0.001, 0.03))
        running -= 1
        seen.append((message.key() or b"", e.payload(Initiated).amount))

    run_async_until(settings, handler, lambda: len(seen) == 60)
    for key in set(keys):
        amounts = [amount for k, amount in seen if k == key]
        assert amounts == sorted(amounts), f"{key!r} out of order: {amounts}"
    assert peak > 1, "different payments should run at once"
    assert committed_total(settings, GROUP, topics(settings).payments) == 60


def test_a_slow_message_holds_back_only_its_partitions_commit(settings: Settings) -> None:
    settings = quick(settings)
    publish(settings, [event(n) for n in range(10)], key=b"one-partition")
    publish(settings, [event(100)], key=b"other-key")  # may share the partition; it is not held up
    release = threading.Event()
    handled: list[int] = []

    async def handler(e: Event, _m: Message) -> None:
        amount = e.payload(Initiated).amount
        if amount == 105:
            while not release.is_set():
                await asyncio.sleep(0.01)
        handled.append(amount)

    stop = threading.Event()
    runner = AsyncConsumerRunner(
        settings, group=GROUP, role="test", handler=handler, max_in_flight=8
    )
    thread = threading.Thread(target=lambda: asyncio.run(runner.run(stop)))
    thread.start()
    deadline = time.monotonic() + 60
    while 200 not in handled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 200 in handled
    assert 105 not in handled
    assert 106 not in handled  # same key: waits behind the slow one
    total = committed_total(settings, GROUP, topics(settings).payments)
    assert total <= 6  # nothing at or past the unfinished offset 5 of its partition (+1 elsewhere)
    release.set()
    while len(handled) < 11 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    assert committed_total(settings, GROUP, topics(settings).payments) == 11


def test_bad_messages_dead_lettered_transient_errors_retried(settings: Settings) -> None:
    settings = override(quick(settings), "worker", max_attempts=2)
    names = topics(settings)
    produce_raw(settings, names.payments, [b"garbage"], key=b"k")
    publish(settings, [event(1), event(2)], key=b"k")
    calls: list[int] = []

    async def handler(e: Event, _m: Message) -> None:
        amount = e.payload(Initiated).amount
        calls.append(amount)
        if amount == 101 and calls.count(101) < 4:
            raise TransientError("briefly away")
        if amount == 102:
            raise ValueError("a bug")

    run_async_until(settings, handler, lambda: calls.count(102) == 2)
    [dead_garbage, dead_bug] = read_topic(settings, names.dead_letters, 2)
    assert dead_garbage.value() == b"garbage"
    assert headers_of(dead_bug)["dlq_error_type"] == "ValueError"
    assert calls.count(101) == 4


def test_stop_leaves_unfinished_messages_uncommitted(settings: Settings) -> None:
    settings = quick(settings)
    publish(settings, [event(n) for n in range(5)], key=b"k")
    started = threading.Event()

    async def never_finishes(e: Event, _m: Message) -> None:
        started.set()
        raise TransientError("gateway down")

    stop = threading.Event()
    runner = AsyncConsumerRunner(
        settings, group=GROUP, role="test", handler=never_finishes, max_in_flight=8
    )
    thread = threading.Thread(target=lambda: asyncio.run(runner.run(stop)))
    thread.start()
    assert started.wait(30)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert committed_total(settings, GROUP, topics(settings).payments) == 0
