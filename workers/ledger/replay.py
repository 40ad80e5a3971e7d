"""`flowpay replay`: rebuild the ledger from the event log while the live ledger keeps serving.

1. ``prepare``: take the end offsets of the log, then copy the live ledger into the shadow
   schema in one snapshot, leaving out every row derived from offsets >= N of the replayed
   partitions; the shadow's cursors say where each partition starts again.
2. ``rebuild``: read the replayed partitions from there up to the end offsets, applying each
   batch to the shadow with the same planner and applier as ``run-ledger`` (one transaction per
   batch; messages that cannot be applied are recorded in the shadow, not dead-lettered again).
   The shadow loads in bulk: its foreign keys, balance triggers and the indexes a load never
   reads are suspended from ``prepare`` to the end of ``rebuild`` (``workers.ledger.bulk`` says
   how nothing gets past them); groups of partitions are rebuilt in parallel, a process per core
   (``workers.ledger.fanout``).
3. ``verify`` runs every ``ledger check`` on the shadow; ``changes`` lists the balances the
   rebuild changes, against the live entries below the same offsets.
4. ``swap``: under the lock every run-ledger batch holds shared, the live schema becomes
   ``ledger_previous`` and the shadow becomes ``ledger`` with the next generation, in one
   transaction. The running ``run-ledger`` sees the new generation in its next batch and
   carries on from the shadow's stored offsets.

Until ``swap`` nothing is written outside the shadow, which ``close`` drops: an interrupted or
dry run leaves the live ledger exactly as it was.
"""

from __future__ import annotations

import gc
import logging
import os
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from tenacity import RetryCallState, Retrying, retry_if_exception_type

from workers.core.config import Settings
from workers.core.consuming import Received, decode_all
from workers.core.db import SCHEMA_LOCK, connect
from workers.core.db_roles import apply_grants, assume_owner
from workers.core.delivery import FIRST_RETRY_S, TRANSIENT, offset_of, partition_of
from workers.core.errors import FlowPayError
from workers.core.kafka import (
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
    log_consumer_error,
    make_consumer,
    watermarks,
)
from workers.core.retry import jittered
from workers.core.topics import GROUP_PREFIX_REPLAY, topics
from workers.ledger import bulk, metrics
from workers.ledger.applier import Applier, no_dead_letter_topic
from workers.ledger.check import CheckResult, run_checks
from workers.ledger.fanout import fan_out
from workers.ledger.rules import STANDARD_RULES, PostingRules
from workers.ledger.store import (
    LIVE_SCHEMA,
    PREVIOUS_SCHEMA,
    SHADOW_SCHEMA,
    SWAP_LOCK,
    Conn,
    LedgerStore,
    queries,
)

log = logging.getLogger(__name__)

ROLE: Final = "ledger-replay"
# One replay at a time ("Ledh"), held for the whole run by a session-level advisory lock.
REPLAY_LOCK: Final = 0x4C656468
# Replay reads a backlog, never waits for new messages: big batches mean fewer transactions and
# statements per event (run-ledger's worker.batch_size is sized for latency instead).
REPLAY_BATCH_MIN: Final = 5000
# Below this many messages one process beats several: spawning one costs ~1 s of imports.
PARALLEL_MIN = 20_000
# The shadow is analyzed as it grows: first at this many messages, then at each doubling.
ANALYZE_FIRST: Final = 10_000


class ReplayError(FlowPayError):
    pass


@dataclass(frozen=True)
class Span:
    """One replayed partition: read from ``start`` up to (not including) ``end``."""

    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class BalanceChange:
    account: str
    phase: str
    before: int  # on the account's normal side, minor units
    after: int

    @property
    def difference(self) -> int:
        return self.after - self.before


class Replay:
    def __init__(
        self,
        settings: Settings,
        *,
        from_offset: int,
        partition: int | None = None,
        rules: PostingRules = STANDARD_RULES,
    ) -> None:
        if from_offset < 0:
            raise ReplayError("--from-offset must be 0 or more")
        self.settings = settings
        self.topic = topics(settings).payments
        self.from_offset = from_offset
        self.partition = partition
        self.rules = rules
        self.q = queries(SHADOW_SCHEMA)
        self.spans: list[Span] = []
        self.applied = 0
        self.swapped = False
        self._lock_conn: Conn | None = None
        self._conn: Conn | None = None
        self._shadow_built = False
        self._suspended: list[bulk.Suspended] = []  # the shadow's checks, until restored
        self._rebuilt = 0  # messages rebuilt so far
        self._analyze_at = ANALYZE_FIRST  # messages read when the shadow is next analyzed

    def __enter__(self) -> Replay:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def total(self) -> int:
        return sum(span.count for span in self.spans)

    @property
    def _params(self) -> dict[str, Any]:
        return {"topic": self.topic, "from_offset": self.from_offset, "partition": self.partition}

    def prepare(self) -> list[Span]:
        """Lock out other replays, take the end offsets, build the shadow from the live ledger."""
        self._lock_conn = _as_owner(self.settings)
        row = self._lock_conn.execute(self.q["replay_lock"], {"lock": REPLAY_LOCK}).fetchone()
        if row is None or not row[0]:
            raise ReplayError("another replay is running")
        ends = self._end_offsets()
        conn = self._connection()
        self._shadow_built = True  # from here on, close() drops whatever exists of it
        with conn.transaction():
            # One snapshot of the live ledger: its rows and its offsets agree.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute(self.q["shadow_drop"])
            conn.execute(self.q["shadow_install"], {"schema": SHADOW_SCHEMA})
            self._suspended = bulk.suspend(conn, SHADOW_SCHEMA)
            for table in ("accounts", "events", "dead_letters", "transactions", "entries"):
                conn.execute(self.q[f"shadow_copy_{table}"], self._params)
            conn.execute(self.q["shadow_copy_cursors"], self._params)
            stored = LedgerStore(SHADOW_SCHEMA).stored_offsets(conn, self.topic)
        self.spans = [
            Span(p, max(stored.get(p, 0), low), high) for p, (low, high) in sorted(ends.items())
        ]
        # From here the progress gauges describe this replay, not the one before it.
        metrics.replay_started(self.total)
        return self.spans

    def rebuild(self, progress: Callable[[int], None] = lambda _n: None) -> int:
        """Apply the log to the shadow up to the end offsets; ``progress(n)`` after each batch.

        Partitions are independent (a payment's events, and a hash chain, are in one), so
        groups of them are rebuilt in parallel, one process per core."""

        def read(count: int) -> None:
            metrics.replay_read(count)
            self._keep_statistics(count)
            progress(count)

        groups = _groups([s for s in self.spans if s.count], os.cpu_count() or 1)
        if len(groups) > 1 and self.total >= PARALLEL_MIN:
            parts = [
                _Part(self.settings, self.from_offset, self.partition, self.rules, group)
                for group in groups
            ]
            self.applied = fan_out(_rebuild_part, parts, read)
        else:
            self.applied = self._rebuild_spans(self.spans, read)
        self._restore_checks()
        return self.applied

    def _keep_statistics(self, count: int) -> None:
        """ANALYZE the shadow each time what was read since the last one is as much again as
        what it held then (a few times a replay); between batches, in the replaying process or
        beside its parts."""
        self._rebuilt += count
        if self._rebuilt >= self._analyze_at:
            self._connection().execute(self.q["shadow_analyze"])
            self._analyze_at = 2 * self._rebuilt

    def _rebuild_spans(self, spans: list[Span], progress: Callable[[int], None]) -> int:
        applier = Applier(
            LedgerStore(SHADOW_SCHEMA, bulk=True),
            self.rules,
            max_attempts=self.settings.worker.max_attempts,
        )
        with _collector_between_batches() as collect:
            for items in self._read(spans):
                if items:
                    self._apply(applier, items)
                progress(len(items))
                del items  # collected next, not kept alive through it
                collect()
        return applier.applied

    def _read(self, spans: list[Span]) -> Generator[list[Received], None, None]:
        """The spans, decoded, batch by batch (once, whatever the retries of a batch)."""
        ends = {span.partition: span.end for span in spans}
        remaining = {span.partition for span in spans if span.count}
        batch_size = max(self.settings.worker.batch_size, REPLAY_BATCH_MIN)
        consumer = _reader(self.settings)
        try:
            consumer.assign(
                [TopicPartition(self.topic, s.partition, s.start) for s in spans if s.count]
            )
            while remaining:
                # No name for the raw batch: held here, its messages would outlive the batch
                # and cost the collector that runs after each (see _collector_between_batches).
                yield decode_all(
                    _within(
                        consumer.consume(batch_size, self.settings.worker.poll_timeout_s),
                        ends,
                        remaining,
                    )
                )
        finally:
            consumer.close()

    def verify(self) -> list[CheckResult]:
        return run_checks(self._connection(), SHADOW_SCHEMA)

    def changes(self) -> list[BalanceChange]:
        rows = self._connection().execute(self.q["shadow_diff"]).fetchall()
        return [BalanceChange(str(a), str(p), int(b), int(c)) for a, p, b, c in rows]

    def not_applied(self) -> list[tuple[int, int, str, str]]:
        """Replayed messages the shadow could not apply: (partition, offset, error type, error)."""
        rows = self._connection().execute(self.q["shadow_dead_letters"], self._params)
        return [(int(p), int(o), str(t), str(e)) for p, o, t, e in rows.fetchall()]

    def swap(self) -> int:
        """Make the shadow the live ledger, in one transaction; returns the new generation."""
        self._restore_checks()  # never a shadow without them, whatever the caller skipped
        conn = self._connection()
        note = f"replay of {self.topic} from offset {self.from_offset}"
        if self.partition is not None:
            note += f" of partition {self.partition}"
        with conn.transaction():
            # No `flowpay db init` half-way through; then wait for the batch run-ledger has
            # in hand and hold its next one until the swap commits.
            conn.execute(self.q["swap_lock"], {"lock": SCHEMA_LOCK})
            conn.execute(self.q["swap_lock"], {"lock": SWAP_LOCK})
            row = conn.execute(self.q["swap_generation"], {"note": note}).fetchone()
            assert row is not None
            for step in ("swap_drop_previous", "swap_retire_live", "swap_promote_shadow"):
                conn.execute(self.q[step])
            conn.execute(
                self.q["swap_reinstall"], {"live": LIVE_SCHEMA, "previous": PREVIOUS_SCHEMA}
            )
            # The rebuilt ledger gets the roles' privileges; the one kept aside loses them.
            apply_grants(conn, only=LIVE_SCHEMA)
            apply_grants(conn, only=PREVIOUS_SCHEMA)
        self.swapped = True
        log.info("replay swapped in generation %d (%s)", row[0], note)
        return int(row[0])

    def close(self) -> None:
        """Drop the shadow unless it was swapped in; release the replay lock."""
        try:
            if self._shadow_built and not self.swapped:
                self._drop_shadow()
        finally:
            for conn in (self._conn, self._lock_conn):
                if conn is not None:
                    conn.close()
            self._conn = self._lock_conn = None

    def _restore_checks(self) -> None:
        if self._suspended:
            bulk.restore(self._connection(), SHADOW_SCHEMA, self._suspended)
            self._suspended = []

    def _drop_shadow(self) -> None:
        try:
            # A fresh connection: the working one may be mid-statement after an interrupt.
            with _as_owner(self.settings) as conn:
                conn.execute(self.q["shadow_drop"])
        except Exception as exc:  # harmless: the next replay starts by dropping it
            log.warning("could not drop %s: %s", SHADOW_SCHEMA, exc)
            return
        self._shadow_built = False

    def _apply(self, applier: Applier, items: list[Received]) -> None:
        """One batch in one transaction, retried while the database is away (or a message's
        verdict says to try again)."""
        store = applier.store

        def once() -> None:
            conn = self._connection()
            with conn.transaction():
                cursors = store.lock_cursors(conn, {item.partition for item in items})
                fresh = [i for i in items if i.offset >= cursors[i.partition].next_offset]
                applier.apply(conn, fresh, cursors, no_dead_letter_topic)
            applier.committed()

        def rolled_back(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "replay batch rolled back (%s); retrying in %.1fs", error, state.upcoming_sleep
            )

        Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            wait=jittered(FIRST_RETRY_S, self.settings.worker.retry_max_backoff_s),
            before_sleep=rolled_back,
            reraise=True,
        )(once)

    def _end_offsets(self) -> dict[int, tuple[int, int]]:
        """{partition: (low, high watermark)} of the replayed partitions, taken now."""
        consumer = _reader(self.settings)
        try:
            metadata = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise ReplayError(f"topic {self.topic} is not available")
            numbers = sorted(metadata.partitions)
            if self.partition is not None:
                if self.partition not in numbers:
                    raise ReplayError(f"{self.topic} has no partition {self.partition}")
                numbers = [self.partition]
            return {p: watermarks(consumer, self.topic, p) for p in numbers}
        finally:
            consumer.close()

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = _as_owner(self.settings)
        return self._conn


@dataclass(frozen=True)
class _Part:
    """What a replay process needs to rebuild its group of partitions (pickled to it)."""

    settings: Settings
    from_offset: int
    partition: int | None
    rules: PostingRules
    spans: list[Span]


def _rebuild_part(part: _Part, progress: Callable[[int], None]) -> int:
    """In a replay process: apply the part's spans to the shadow the parent prepared."""
    with Replay(
        part.settings, from_offset=part.from_offset, partition=part.partition, rules=part.rules
    ) as job:
        return job._rebuild_spans(part.spans, progress)


@contextmanager
def _collector_between_batches() -> Iterator[Callable[[], int]]:
    """The automatic garbage collector off while batches are read and applied; the caller
    collects the young generations once after each batch instead.

    A batch's objects (thousands of decoded events, rows and hash-chain records) stay alive
    until it is written, so the automatic collector, run every 700 allocations, traversed them
    again and again as they aged: ~40% of a replay's CPU. Reference counting frees them; the
    collector is only needed for cycles (a dead-lettered exception and its traceback), and
    those are all young when a batch ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield lambda: gc.collect(1)
    finally:
        if enabled:
            gc.enable()


def _groups(spans: list[Span], count: int) -> list[list[Span]]:
    """``spans`` in at most ``count`` groups of about as many messages, largest first."""
    groups: list[list[Span]] = [[] for _ in range(min(count, len(spans)))]
    for span in sorted(spans, key=lambda s: -s.count):
        min(groups, key=lambda g: sum(s.count for s in g)).append(span)
    return groups


def _as_owner(settings: Settings) -> Conn:
    """A connection as the owner: replay creates, renames and drops schemas, which is DDL, and
    suspends the shadow's checks, which only its owner may; it runs as the migrations do."""
    conn = connect(settings, "owner", autocommit=True)
    assume_owner(conn)
    return conn


def _reader(settings: Settings) -> Consumer:
    # A group of its own that never commits: replay positions itself from the shadow.
    return make_consumer(
        settings,
        f"{GROUP_PREFIX_REPLAY}{uuid.uuid4().hex}",
        "operator",
        **{"enable.partition.eof": True},
    )


def _within(batch: list[Message], ends: dict[int, int], remaining: set[int]) -> list[Message]:
    """The messages below their partition's end; partitions that reached it leave ``remaining``."""
    wanted = []
    for message in batch:
        partition, offset = partition_of(message), offset_of(message)
        if partition not in remaining:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF and offset >= ends[partition]:
                remaining.discard(partition)
            elif error.code() != KafkaError._PARTITION_EOF:
                log_consumer_error(ROLE, error)
            continue
        if offset >= ends[partition]:
            remaining.discard(partition)
            continue
        wanted.append(message)
        if offset + 1 >= ends[partition]:
            remaining.discard(partition)
    return wanted
