"""Extra scenario (not in the default run): what the consumer engine itself costs.

A subscriber whose handler does nothing reads payment events, in this process, twice: as they
arrive at a steady rate (small poll batches, as every consumer sees them below its maximum),
then from a backlog (full batches, as in a burst). Reported: the CPU time of each of the
engine's threads (its loop, its Kafka thread, its handler thread) per event and per handler
call, from /proc, counted after the first call. librdkafka's own threads are the client's,
not the engine's, and are left out (the producer's share this process)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from bench.env import isolated
from bench.events import initiated, payment_id, produce_all
from bench.procstat import threads_cpu_seconds
from workers.core import heap
from workers.core.config import Settings
from workers.core.consuming import Batch, Routes, Subscriber
from workers.core.consuming import run as run_engine
from workers.core.events import Encoded, EventType, encode
from workers.core.kafka import Producer, make_producer
from workers.core.threads import NAME_BYTES, name_native
from workers.core.topics import topics

ROLE: Final = "engine"
# The kernel keeps the first NAME_BYTES of a thread's name: these prefixes fit.
THREADS: Final = {kind: f"{ROLE}-{kind}"[:NAME_BYTES] for kind in ("loop", "kafka", "handler")}
# The steady part produces this often, each time what is due by then.
_STEP_S: Final = 0.01


@dataclass(frozen=True)
class EngineSizes:
    events: int = 20_000  # in each part
    rate: float = 2000.0  # events/s of the steady part
    keys: int = 1000  # payments the events are spread over
    timeout_s: float = 300.0


class _Counting:
    """The handler: counts what it is given, nothing else. One handler thread writes the
    counts (the subscriber takes one call at a time); the bench reads them.

    Its first call waits until the bench has read the threads' CPU, so that what is counted
    after it starts exactly there."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.events = 0
        self.total_calls = 0
        self.first = threading.Event()
        self.go = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def take(self, batch: Batch) -> None:
        self.events += len(batch.items)
        self.total_calls += 1
        if not self.first.is_set():
            self.first.set()
            self.go.wait()
        if self.events >= self.total:
            self.done.set()

    def failed(self, error: BaseException) -> None:
        """The engine stopped with ``error``: whoever waits wakes."""
        self.error = error
        self.first.set()
        self.done.set()

    def wait(self, event: threading.Event, timeout_s: float) -> None:
        if not event.wait(timeout_s):
            raise RuntimeError(f"bench: the engine read {self.events} of {self.total} events")
        if self.error is not None:
            raise RuntimeError("bench: the engine failed") from self.error


def run(base: Settings, sizes: EngineSizes) -> dict[str, Any]:
    with isolated(base, "engine") as bench:
        messages = _messages(sizes)
        steady = _part(bench.settings, "steady", messages, sizes, rate=sizes.rate)
        # A fresh group reads the topic from its start: the steady part's events, then these.
        backlog = _part(bench.settings, "backlog", messages, sizes, rate=0.0, before=len(messages))
    return {"sizes": sizes.__dict__, "steady": steady, "backlog": backlog}


def _messages(sizes: EngineSizes) -> list[Encoded]:
    payments = [payment_id(n) for n in range(sizes.keys)]
    return [encode(initiated(payments[n % sizes.keys], n)) for n in range(sizes.events)]


def _part(
    settings: Settings,
    name: str,
    messages: list[Encoded],
    sizes: EngineSizes,
    *,
    rate: float,
    before: int = 0,
) -> dict[str, Any]:
    """A new group reading the topic, which holds ``before`` events: ``messages`` produced at
    a steady ``rate``, or (0) all of them before it starts."""
    topic = topics(settings).payments
    producer = make_producer(settings, "outbox")
    # One event first: the group has joined and read it before anything is counted.
    _produce(producer, topic, messages[:1])
    if not rate:
        _produce(producer, topic, messages[1:])
    counting, stop = _Counting(before + len(messages)), threading.Event()
    subscriber = Subscriber(f"bench-engine-{name}", ROLE, _routes(), counting, principal="api")
    loop = threading.Thread(target=_loop, args=(settings, subscriber, stop), name=THREADS["loop"])
    heap.settle()  # as every role does before its loop
    loop.start()
    try:
        counting.wait(counting.first, sizes.timeout_s)
        cpu_before, seen, calls_before = _threads(), counting.events, counting.total_calls
        counting.go.set()
        started = time.monotonic()
        if rate:
            _paced(producer, topic, messages[1:], rate)
        counting.wait(counting.done, sizes.timeout_s)
        cpu_after, seconds = _threads(), time.monotonic() - started
    finally:
        counting.go.set()
        stop.set()
        loop.join(60)
    if loop.is_alive():
        raise RuntimeError("bench: the engine did not stop within 60 s")
    events, calls = counting.events - seen, counting.total_calls - calls_before
    used = {kind: cpu_after[kind][0] - cpu_before[kind][0] for kind in THREADS}
    return {
        "events": events,
        "read_before": seen,  # by the first call, before counting began
        "threads": {kind: count for kind, (_cpu, count) in cpu_after.items()},
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1) if seconds else 0.0,
        "calls": calls,
        "events_per_call": round(events / max(1, calls), 1),
        "us_per_event": {kind: round(1e6 * cpu / max(1, events), 1) for kind, cpu in used.items()},
        "us_per_call": {kind: round(1e6 * cpu / max(1, calls), 1) for kind, cpu in used.items()},
    }


def _routes() -> Routes[_Counting]:
    return Routes(ROLE, dict.fromkeys(EventType, _Counting.take))


def _loop(settings: Settings, subscriber: Subscriber[_Counting], stop: threading.Event) -> None:
    name_native()
    try:
        run_engine(settings, subscriber, stop)
    except BaseException as exc:
        subscriber.handlers.failed(exc)
        raise


def _produce(producer: Producer, topic: str, messages: list[Encoded]) -> None:
    if produce_all(producer, topic, messages):
        raise RuntimeError(f"bench: Kafka refused some of {len(messages)} events")


def _threads() -> dict[str, tuple[float, int]]:
    """CPU seconds so far of each kind of the engine's threads, and how many there are."""
    found = threads_cpu_seconds(os.getpid(), tuple(THREADS.values()))
    return {kind: found[prefix] for kind, prefix in THREADS.items()}


def _paced(producer: Producer, topic: str, messages: list[Encoded], rate: float) -> None:
    """Produce ``messages`` at ``rate`` a second: every step, what is due by then."""
    started, sent = time.monotonic(), 0
    while sent < len(messages):
        due = min(len(messages), int((time.monotonic() - started) * rate) + 1)
        if due > sent:
            _produce(producer, topic, messages[sent:due])
            sent = due
        time.sleep(_STEP_S)


def table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    rows = []
    for part in ("steady", "backlog"):
        found = result[part]
        per_event, per_call = found["us_per_event"], found["us_per_call"]
        rows.append(
            [
                part,
                found["events"],
                f"{found['events_per_s']:.0f}",
                found["events_per_call"],
                *(f"{per_event[k]:.1f} / {per_call[k]:.0f}" for k in THREADS),
            ]
        )
    title = "Consumer engine alone, handler doing nothing (extra)"
    columns = ["part", "events", "events/s", "events per call",
               *(f"{k} thread us per event / per call" for k in THREADS)]  # fmt: skip
    return title, columns, rows
