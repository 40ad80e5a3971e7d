"""Apply a batch of messages to one ledger schema, inside the caller's transaction.

Fast path: the whole batch in one savepoint, a handful of statements (COPY) however many
events; messages that can never apply (undecodable, refused by the rules) are dead-lettered on
the way. Anything else that stops it (the database refuses a transaction, a rule raises) and
the batch is applied again one message per savepoint, so that only the culprit meets the
verdicts of ``workers.core.delivery``: dead-lettered (recorded, its offset advancing in this
transaction) or, while attempts remain, the whole batch rolls back and is retried. Transient
errors always propagate: the caller rolls back and retries with backoff.

Dead letters are sent before the transaction commits, once per message as long as the same
batch is being retried (a rollback undoes the record of the dead letter, not its sending); a
crash between the send and the commit sends it again after a restart, which the dead-letter
topic tolerates.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

from workers.core.delivery import TRANSIENT, Verdicts, offset_of, partition_of, topic_of
from workers.core.errors import EventError, PermanentError
from workers.core.events import Event
from workers.core.kafka import Message
from workers.ledger.known_states import KnownStates
from workers.ledger.posting import Item, NeedsRetry, Plan, Planner, Verdict
from workers.ledger.rules import PaymentState, PostingRules
from workers.ledger.store import Conn, Cursor, LedgerStore, Partition

log = logging.getLogger(__name__)

DeadLetterSink = Callable[[Message, BaseException], None]


class Applier:
    def __init__(
        self,
        store: LedgerStore,
        rules: PostingRules,
        *,
        max_attempts: int,
    ) -> None:
        self.store = store
        self.planner = Planner(rules)
        self.known = KnownStates()
        self.max_attempts = max_attempts
        self.dead_letter: DeadLetterSink = no_dead_letter_topic  # the batch in hand's
        # Per message of the batch in hand, kept across its retries.
        self._verdicts: dict[_Key, Verdicts] = {}
        self._sent: set[_Key] = set()
        self.applied = 0  # events applied (posted or recorded) since start
        self.rejected = 0  # messages dead-lettered since start
        self.postings: Counter[str] = Counter()  # by kind, in the batch in hand (for metrics)

    def apply(
        self,
        conn: Conn,
        items: Sequence[Item],
        cursors: dict[Partition, Cursor],
        dead_letter: DeadLetterSink,
    ) -> dict[Partition, Cursor]:
        """Apply ``items`` (offset order within a partition) on top of ``cursors``, sending
        what cannot apply to ``dead_letter``.

        Returns the cursors after them; the caller stores nothing else, commits, then calls
        ``committed``.
        """
        self.postings.clear()
        self.dead_letter = dead_letter
        self.known.begin()
        if not items:
            return cursors
        # A batch other than the one retried: forget what was decided about the previous one.
        current = {_key(item.message) for item in items}
        self._verdicts = {k: v for k, v in self._verdicts.items() if k in current}
        self._sent &= current
        try:
            with conn.transaction():
                # Only certain verdicts here: anything to count goes to the slow path.
                after = self._apply(conn, items, cursors, _permanent_only, stage=True)
        except NeedsRetry as exc:  # a rule failed: counted on the way below
            log.warning("ledger batch refused (%r); applying it one message at a time", exc)
            return self._one_at_a_time(conn, items, cursors)
        except TRANSIENT:
            raise
        except Exception as exc:
            log.warning("ledger batch refused (%r); applying it one message at a time", exc)
            return self._one_at_a_time(conn, items, cursors)
        return after

    def committed(self) -> None:
        """The caller's transaction committed what ``apply`` returned."""
        self.known.committed()

    def _one_at_a_time(
        self, conn: Conn, items: Sequence[Item], cursors: dict[Partition, Cursor]
    ) -> dict[Partition, Cursor]:
        """Each message in its own savepoint. A message to retry holds back the rest of its
        partition (order matters there) but not the other partitions, so that one pass counts
        an attempt for every failing message; then the whole batch rolls back and is retried."""
        self.known.clear()
        after = cursors
        held: dict[Partition, NeedsRetry] = {}
        for item in items:
            if item.partition in held:
                continue
            try:
                after = self._apply_alone(conn, item, after)
            except NeedsRetry as exc:
                held[item.partition] = exc
        if held:
            raise next(iter(held.values()))
        return after

    def _apply(
        self,
        conn: Conn,
        items: Sequence[Item],
        cursors: dict[Partition, Cursor],
        verdict: Verdict,
        stage: bool = False,
    ) -> dict[Partition, Cursor]:
        events = [i.decoded for i in items if isinstance(i.decoded, Event)]
        seen = self.store.seen(conn, [e.event_id for e in events])
        partitions = {
            i.decoded.payment_id: i.partition for i in items if isinstance(i.decoded, Event)
        }
        states = self._states(conn, cursors, partitions)
        plan = self.planner.plan(items, cursors, states, seen, verdict)
        self._write(conn, plan)
        self.applied += len(plan.writes.events)
        if stage:
            self.known.stage(states, partitions, plan.writes.cursors)
        return plan.writes.cursors

    def _states(
        self, conn: Conn, cursors: dict[Partition, Cursor], partitions: dict[str, Partition]
    ) -> dict[str, PaymentState]:
        """The payments' states: those this process committed last, the rest from the store."""
        states, missing = self.known.lookup(cursors, partitions)
        if missing:
            states.update(self.store.payment_states(conn, sorted(missing)))
        return states

    def _apply_alone(
        self, conn: Conn, item: Item, cursors: dict[Partition, Cursor]
    ) -> dict[Partition, Cursor]:
        try:
            with conn.transaction():
                return self._apply(conn, [item], cursors, self._verdict)
        except TRANSIENT:  # NeedsRetry among them
            raise
        except Exception as exc:
            if not self._verdict(item.message, exc):
                raise NeedsRetry(f"applying offset {item.offset}: {exc!r}") from exc
            failure = exc
        with conn.transaction():
            return self._record_rejected(conn, item, cursors, failure)

    def record_rejected(
        self, conn: Conn, item: Item, cursors: dict[Partition, Cursor], exc: BaseException
    ) -> dict[Partition, Cursor]:
        """Record ``item`` as dead-lettered (already sent) and move its partition past it."""
        self.known.clear()
        self._sent.add(_key(item.message))
        self.rejected += 1
        return self._record_rejected(conn, item, cursors, exc)

    def _record_rejected(
        self, conn: Conn, item: Item, cursors: dict[Partition, Cursor], exc: BaseException
    ) -> dict[Partition, Cursor]:
        plan = self.planner.reject(item, cursors, exc)
        self._write(conn, plan)
        return plan.writes.cursors

    def _write(self, conn: Conn, plan: Plan) -> None:
        self.store.write(conn, plan.writes)
        # Fires the deferred balance checks while a savepoint can still catch them.
        self.store.check_now(conn)
        self.postings.update(txn.record.kind for txn in plan.writes.txns)
        for message, exc in plan.rejected:
            if _key(message) not in self._sent:
                self.dead_letter(message, exc)
                self._sent.add(_key(message))
                self.rejected += 1

    def _verdict(self, message: Message, exc: BaseException) -> bool:
        verdicts = self._verdicts.setdefault(_key(message), Verdicts(self.max_attempts))
        return verdicts.dead_letter(exc)


_Key = tuple[str, int, int]


def _permanent_only(_message: Message, exc: BaseException) -> bool:
    """Dead-letter what can never succeed; leave everything else to the counted verdicts."""
    return isinstance(exc, EventError | PermanentError)


def _key(message: Message) -> _Key:
    return (topic_of(message), partition_of(message), offset_of(message))


def no_dead_letter_topic(message: Message, exc: BaseException) -> None:
    """For replay: the live ledger already dead-lettered what it could not apply."""
    log.warning(
        "replay: offset %s[%d]@%d not applied: %s: %s",
        topic_of(message), partition_of(message), offset_of(message), type(exc).__name__, exc,
    )  # fmt: skip
