"""The outbox relay loop: publish every emitting schema's outbox to Kafka, at least once.

Events go to the payment event log; the orchestrator's commands to the command topic (each
outbox's topic is ``workers.core.outbox.OUTBOXES``'s), both keyed by payment id.

A round reads a batch from each outbox with rows waiting and hands every batch to the producer
before it waits for any acknowledgement: one wait on Kafka for them all. In the round's one
transaction, each batch is marked published once all of its own messages are acknowledged; a
batch short of that is left unmarked and goes again later, without holding back the others.
Anything else that fails rolls the round back, and what it had queued is dropped from the
producer, so that nothing of it reaches Kafka after the rows are claimed again. A crash between
producing and committing repeats events, never loses them; consumers dedupe by event id. One
relay at a time works on a schema (a transaction-level advisory lock), so several relays
neither double-publish nor reorder one payment's events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import psycopg

from workers.core import heap, observe
from workers.core.config import Settings
from workers.core.db import connect
from workers.core.events import header
from workers.core.heartbeat import Heartbeat
from workers.core.lifecycle import install_stop_handlers
from workers.core.outbox import EMITTING_SCHEMAS, topic_of
from workers.core.retry import delays
from workers.core.topics import topics
from workers.outbox import metrics, store
from workers.outbox.publisher import ROLE, BatchPublisher, NotAcknowledged, Sent
from workers.outbox.store import Conn, OutboxRow, Pruned

log = logging.getLogger(__name__)

# Outages are retried for ever, so the cap only bounds how late the relay notices a recovery.
_FIRST_BACKOFF_S = 0.2
_MAX_BACKOFF_S = 5.0
# The longest the wait for work goes without looking at the stop event.
_WAIT_SLICE_S = 0.5
# The wait after the first empty round; each further empty round doubles it, up to
# outbox.poll_interval_s. A busy outbox is read back to back, an idle one costs a few queries.
FIRST_IDLE_WAIT_S = 0.002


def serve(settings: Settings) -> None:
    """Run the relay in this process until SIGTERM/SIGINT (what ``flowpay run-outbox`` does)."""
    observe.start(settings, ROLE)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    metrics.start(settings)
    relay = OutboxRelay(settings)
    heap.settle()
    relay.run(stop)


@dataclass(frozen=True, slots=True)
class _Batch:
    schema: str
    rows: list[OutboxRow]
    sent: Sent
    started_ns: int


class OutboxRelay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = topics(settings)
        self.topic_of = {schema: topic_of(settings, schema) for schema in EMITTING_SCHEMAS}
        self.failures = 0  # failed attempts since start, for tests and diagnostics
        self._stop = threading.Event()
        self._publisher = BatchPublisher(settings)
        self._heartbeat = Heartbeat(ROLE)
        self._conn: Conn | None = None
        self._idle_wait = 0.0
        self._next_prune = 0.0
        self._delays = _delays()
        self._outage_since: float | None = None
        self._since_outage: int | None = None  # events published while catching up

    def __enter__(self) -> OutboxRelay:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set, riding out Kafka and PostgreSQL outages; then close."""
        self._stop = stop
        log.info(
            "relaying outboxes %s",
            ", ".join(f"{schema} to {topic}" for schema, topic in self.topic_of.items()),
        )
        try:
            while not stop.is_set():
                self._heartbeat.beat()
                try:
                    self._step()
                except (psycopg.OperationalError, NotAcknowledged) as exc:
                    self._back_off(exc)
        finally:
            self.close()
        log.info("outbox relay stopped")

    def publish_once(self) -> int:
        """One round: at most one batch from each schema. Returns how many events it published."""
        return self._round(self._connect())[0]

    def prune(self) -> Pruned:
        pruned = store.prune(self._connect(), self.settings)
        log.debug(
            "pruned %d outbox rows, %d idempotency keys",
            pruned.outbox_rows,
            pruned.idempotency_keys,
        )
        return pruned

    def close(self) -> None:
        self._publisher.close()
        self._disconnect()

    def _step(self) -> None:
        conn = self._connect()
        if time.monotonic() >= self._next_prune:
            self.prune()
            self._next_prune = time.monotonic() + self.settings.outbox.prune_interval_s
        published, more = self._round(conn)
        self._recovered(published, more)
        if not more:
            cap = self.settings.outbox.poll_interval_s
            self._idle_wait = (
                FIRST_IDLE_WAIT_S if published else next_idle_wait(self._idle_wait, cap)
            )
            self._wait(self._idle_wait)

    def _round(self, conn: Conn) -> tuple[int, bool]:
        """One batch from each outbox with rows waiting (see the module's docstring). Raises
        the first batch's NotAcknowledged once the others are committed; ``more`` when a full
        batch says rows may be left."""
        waiting = store.waiting(conn)
        if not waiting:
            return 0, False
        try:
            with conn.transaction():
                batches = [b for schema in waiting if (b := self._send_batch(conn, schema))]
                confirmed, refused = self._confirm(batches)
                for batch in confirmed:
                    store.mark_published(conn, batch.schema, [row.id for row in batch.rows])
        except BaseException:
            self._publisher.abandon()
            raise
        for batch in confirmed:
            metrics.published(batch.schema, len(batch.rows))
            headers = [row.headers for row in batch.rows]
            observe.published(ROLE, f"{batch.schema}.outbox", headers, batch.started_ns)
        if refused is not None:
            raise refused
        full = self.settings.outbox.batch_size
        return sum(len(b.rows) for b in batches), any(len(b.rows) >= full for b in batches)

    def _send_batch(self, conn: Conn, schema: str) -> _Batch | None:
        """Claim ``schema``'s oldest rows and hand them to the producer."""
        if self._stop.is_set() or not store.try_lock(conn, schema):
            return None  # stopping; or another relay is on this schema and will drain it
        rows = store.claim(conn, schema, self.settings.outbox.batch_size)
        if not rows:
            return None
        started_ns = time.time_ns()
        sent = self._publisher.send(self._router(schema), rows)
        return _Batch(schema, rows, sent, started_ns)

    def _confirm(self, batches: list[_Batch]) -> tuple[list[_Batch], NotAcknowledged | None]:
        """The batches whose every message Kafka acknowledged, and the first refusal."""
        confirmed: list[_Batch] = []
        refused: NotAcknowledged | None = None
        for batch in batches:
            try:
                self._publisher.confirm(batch.sent, self._stop, self._heartbeat.beat)
            except NotAcknowledged as exc:
                log.warning("%s.outbox: %s; that batch goes again later", batch.schema, exc)
                refused = refused or exc
            else:
                confirmed.append(batch)
        return confirmed, refused

    def _router(self, schema: str) -> Callable[[OutboxRow], str]:
        default = self.topic_of[schema]
        return lambda row: self.topics.for_type(header(row.headers, "ce_type"), default)

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` or until a stop request, beating the heartbeat meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stop.wait(min(max(deadline - time.monotonic(), 0), _WAIT_SLICE_S)):
            if time.monotonic() >= deadline:
                return
            self._heartbeat.beat()

    def _connect(self) -> Conn:
        """The working connection, (re)opened when it was lost."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings, "outbox", autocommit=True)
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _back_off(self, exc: Exception) -> None:
        if isinstance(exc, psycopg.OperationalError):
            self._disconnect()  # a broken connection does not always know it is broken
        if self._stop.is_set():
            log.info("stopping with a round unconfirmed; it will be published again: %s", exc)
            return
        self.failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        delay = next(self._delays)
        log.warning("%s; retrying in %.1fs", _one_line(exc), delay)
        self._stop.wait(delay)

    def _recovered(self, published: int, more: bool) -> None:
        if self._outage_since is not None:
            log.info(
                "publishing again after %.0fs of failures; catching up",
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
            self._delays = _delays()
            self._since_outage = 0
        if self._since_outage is not None:
            self._since_outage += published
            if not more:
                log.info("caught up: %d events published since the outage", self._since_outage)
                self._since_outage = None


def next_idle_wait(previous: float, cap: float) -> float:
    """The wait after one more empty round: twice the last, from FIRST_IDLE_WAIT_S up to cap."""
    return min(cap, max(FIRST_IDLE_WAIT_S, previous * 2))


def _delays() -> Iterator[float]:
    """Exponential backoff with full jitter, capped; endless."""
    return delays(_FIRST_BACKOFF_S, _MAX_BACKOFF_S)


def _one_line(exc: Exception) -> str:
    # psycopg's messages run over several lines; a log line should not.
    return " ".join(str(exc).split()) or type(exc).__name__
