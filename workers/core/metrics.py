"""Prometheus metrics every consumer shares, and serving a role's ``/metrics``.

Each role serves its own registry on its own port (``[metrics]``, 0 = off) from a daemon thread.
The consumer engine records here, in the one place it decides an outcome: the duration of each
handler call and the messages of each outcome per group (``ok``, ``retry``, ``dead_letter``),
dead letters per group and the lag of every assigned partition. Gauges read from the database
(backlogs) are kept by a ``Sampler`` thread, so a stalled role still reports how much is waiting
for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

from workers.core.config import DatabaseRole, Settings
from workers.core.db import connect
from workers.core.kafka import Consumer, consumer_lag

log = logging.getLogger(__name__)

OK: Final = "ok"
RETRY: Final = "retry"
DEAD_LETTER: Final = "dead_letter"
# Handlers take from a millisecond (a dedupe) to a gateway's seconds.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_EVERY_S: Final = 1.0

HANDLER_SECONDS = Histogram(
    "flowpay_handler_duration_seconds",
    "Time one handler call (a batch) took, by consumer group and outcome (ok, retry, dead_letter).",
    ["group", "outcome"],
    buckets=LATENCY_BUCKETS,
)
HANDLER_OUTCOMES = Counter(
    "flowpay_handler_outcomes",
    "Messages by consumer group and the outcome of the handler call that had them (ok, retry, "
    "dead_letter).",
    ["group", "outcome"],
)
DEAD_LETTERS = Counter(
    "flowpay_dead_letters", "Messages sent to the dead-letter topic, by consumer group.", ["group"]
)
# In serve-api's multiprocess mode each server process reads its own partitions.
CONSUMER_LAG = Gauge(
    "flowpay_consumer_lag",
    "Messages behind the end of an assigned partition, by consumer group.",
    ["group", "topic", "partition"],
    multiprocess_mode="livemax",
)


def handled(group: str, outcome: str, started: float, count: int = 1) -> None:
    """Record one handler call of ``count`` messages that began at ``started``
    (``time.perf_counter()``)."""
    HANDLER_SECONDS.labels(group, outcome).observe(time.perf_counter() - started)
    HANDLER_OUTCOMES.labels(group, outcome).inc(count)


def counted(group: str, outcome: str, count: int = 1) -> None:
    """Messages of an outcome reached outside a timed call (a dead letter sent by a handler)."""
    HANDLER_OUTCOMES.labels(group, outcome).inc(count)


def dead_lettered(group: str) -> None:
    DEAD_LETTERS.labels(group).inc()


class LagProbe:
    """Keeps ``flowpay_consumer_lag`` of one consumer current, at most once per second."""

    def __init__(self, group: str, every_s: float = LAG_EVERY_S) -> None:
        self.group = group
        self.every_s = every_s
        self._next = 0.0
        self._shown: set[tuple[str, int]] = set()

    def observe(self, consumer: Consumer) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.every_s
        try:
            lags = consumer_lag(consumer)
        except Exception as exc:  # monitoring must never stop the consumer
            log.debug("%s: consumer lag unavailable: %s", self.group, exc)
            return
        for topic, partition in self._shown - lags.keys():
            # Zero first: in multiprocess mode the value stays in this process's file, and the
            # largest live value is what a scrape shows.
            CONSUMER_LAG.labels(self.group, topic, str(partition)).set(0)
            CONSUMER_LAG.remove(self.group, topic, str(partition))
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.group, topic, str(partition)).set(lag)
        self._shown = set(lags)


def serve_metrics(
    settings: Settings, port: int, registry: CollectorRegistry = REGISTRY
) -> int | None:
    """Serve ``registry`` at http://<metrics.host>:<port>/metrics; the port, or None when off.

    A port already taken costs the role its metrics, not its work: logged, and carried on.
    """
    if not settings.metrics.enabled or port == 0:
        return None
    try:
        _start_http_server(port, addr=settings.metrics.host, registry=registry)
    except OSError as exc:
        log.error("cannot serve metrics on port %d (%s); carrying on without", port, exc)
        return None
    log.info("metrics at http://%s:%d/metrics", settings.metrics.host, port)
    return port


class Sampler:
    """Calls ``sample`` every ``every_s`` seconds in a daemon thread until stopped."""

    def __init__(self, name: str, sample: Callable[[], None], every_s: float = 1.0) -> None:
        self.name = name
        self.sample = sample
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"metrics-{name}", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # a database outage: try again next time
                log.debug("%s metrics sample failed: %s", self.name, exc)
            self._stop.wait(self.every_s)


class DatabaseSampler(Sampler):
    """A ``Sampler`` whose ``sample`` reads the database as ``role`` (whose name it takes), over
    one connection kept open."""

    def __init__(
        self,
        settings: Settings,
        role: DatabaseRole,
        sample: Callable[[psycopg.Connection[tuple[object, ...]]], None],
        every_s: float = 1.0,
    ) -> None:
        super().__init__(role, self._sample_with_connection, every_s)
        self.settings = settings
        self.role: DatabaseRole = role
        self.read = sample
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _sample_with_connection(self) -> None:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.settings, self.role, autocommit=True)
        self.read(self._conn)
