"""The one consumer engine: every consumer declares a ``Subscriber``; the engine runs it.

Declaring. A subscriber names its group, role and topics, an exhaustive routing table
(``Routes``: every ``EventType`` to a handler or ``IGNORE``; a missing type fails at
construction) and where its offsets live. Handlers are methods of one object, sync or async;
both run on the same asyncio core (sync ones in a thread pool, async ones on the loop).

Batches. A handler receives a ``Batch``: the events of one poll batch routed to it, in offset
order within each partition (so in order per key; the ledger's hash chain relies on it). A
set-based handler takes them in ``Batch.rounds()``, none of which holds two events of one key.

Ordering. Never two events of one key at once: up to ``max_in_flight`` units of work run
concurrently, and a poll batch's events whose key is still in hand in an earlier unit form a
unit of their own that starts when that one is done (the rest of the batch starts at once).
Within a unit, calls run one after another; events of one key that go to different handlers
reach them in offset order.

Offsets, one of two modes.
  Kafka (``store=None``): committed after the handler returned (its effects durable), only
    below the lowest unfinished offset of each partition, every half second and at every stop
    and rebalance. A crash redelivers what had not finished: handlers dedupe by event id.
  Stored (``store=OffsetStore``): the handler writes the offsets in the transaction of its
    effects; the engine seeks each assigned partition to the stored offset, tells each batch
    where it positioned the partitions (``Batch.positions``), and re-seeks a partition the
    handler found misplaced (``Batch.reseek``) or every partition when the store's offsets
    moved (``Batch.reposition``, or ``OffsetStore.moved`` while idle). The whole poll batch
    goes to one handler call, one batch at a time; undecodable messages are in it, for the
    handler to record as dead letters with their offsets.

Verdicts (``workers.core.consuming.calls``; decided by ``workers.core.delivery.Verdicts``).
A handler raises; the engine decides. Transient errors (``TransientError``,
``psycopg.OperationalError``): the call again after a backoff, without limit. Anything else:
each event of the call alone, so that only the culprit meets the verdict: retried up to
``worker.max_attempts`` (``EventError``, ``PermanentError``: at once), then dead-lettered to
``<prefix>.payments.dlq`` with ``DeadLetters``' headers, which counts as done. Undecodable
messages and unknown event types are dead-lettered too; the worker carries on.

Stop. The first SIGTERM (the stop event): no more polling; what is in hand finishes within
``worker.grace_period_s``, finished offsets are committed, the consumer closes, and the role
exits 0. A call waiting out a retry backoff stops at once, unfinished and uncommitted.

Exceptions::

    ValueError
    └── IncompleteRoutes    a routing table without a decision for an event type
    Exception
    └── Stopped             internal: a backoff was cut short by the stop
"""

from workers.core.consuming.batch import Batch, Partition, Received, decode_all
from workers.core.consuming.calls import Stopped
from workers.core.consuming.engine import Engine, run
from workers.core.consuming.offsets import OffsetStore
from workers.core.consuming.routing import IGNORE, IncompleteRoutes, Routes, register, registered
from workers.core.consuming.subscriber import Subscriber

__all__ = [
    "IGNORE",
    "Batch",
    "Engine",
    "IncompleteRoutes",
    "OffsetStore",
    "Partition",
    "Received",
    "Routes",
    "Stopped",
    "Subscriber",
    "decode_all",
    "register",
    "registered",
    "run",
]
