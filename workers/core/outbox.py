"""The write side of the transactional outbox: stage events in the caller's transaction.

Each emitting service has ``<schema>.outbox``; the relay (``workers.outbox``) publishes them,
each to its topic: events to the payment event log, the orchestrator's commands to the command
topic. Every outbox has one shape; ``event_id`` holds what the message's ``ce_id`` says (a
command's id in the orchestrator's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from psycopg import AsyncConnection, AsyncCursor, Connection, Cursor, sql
from psycopg.types.json import Jsonb

from workers.core import commands, tracing
from workers.core.commands import Command
from workers.core.config import Settings
from workers.core.events import Encoded, Event, decode, encode
from workers.core.sql import load_queries
from workers.core.topics import topics

# Every outbox the relay publishes, and the topic (a field of ``Topics``) each goes to.
OUTBOXES: Final = {"api": "payments", "processor": "payments", "orchestrator": "commands"}
EMITTING_SCHEMAS: Final = tuple(OUTBOXES)
# The outboxes of events (the others hold commands).
EVENT_SCHEMAS: Final = tuple(s for s, topic in OUTBOXES.items() if topic == "payments")


def topic_of(settings: Settings, schema: str) -> str:
    """The topic ``schema``'s outbox is published to."""
    name: str = getattr(topics(settings), OUTBOXES[schema])
    return name


def insert_statement(schema: str) -> sql.Composed:
    return load_queries("workers.core")["outbox_insert"].format(schema=sql.Identifier(schema))


OutboxRow = tuple[Any, ...]


def outbox_row(event: Event) -> OutboxRow:
    """The event as its outbox row, carrying the current span's trace context: build it where
    that span is current, even when the row is written later with others."""
    return encoded_row(event.event_id, encode(event))


def command_row(command: Command, traceparent: str | None = None) -> OutboxRow:
    """``traceparent``: the trace of the event the command answers (else the current span's)."""
    return encoded_row(command.command_id, commands.encode(command), traceparent)


def encoded_row(id_: object, encoded: Encoded, traceparent: str | None = None) -> OutboxRow:
    """An encoded message of any kind as an outbox row, with ``traceparent`` in its headers, or
    else the current span's trace context."""
    carried = (
        tracing.inject(encoded.headers)
        if traceparent is None
        else [*encoded.headers, (tracing.TRACEPARENT, traceparent.encode())]
    )
    headers = [
        [name, value.decode() if isinstance(value, bytes) else value] for name, value in carried
    ]
    return (id_, encoded.key, encoded.value, Jsonb(headers))


def stage(cursor: Cursor[Any], schema: str, events: Iterable[Event]) -> None:
    cursor.executemany(insert_statement(schema), [outbox_row(e) for e in events])


async def stage_async(cursor: AsyncCursor[Any], schema: str, events: Iterable[Event]) -> None:
    await cursor.executemany(insert_statement(schema), [outbox_row(e) for e in events])


def stage_commands(
    cursor: Cursor[Any], staged: Iterable[Command], traces: Mapping[str, str] | None = None
) -> None:
    """Stage the orchestrator's commands in its outbox (a command staged twice is one row);
    ``traces``: per subject, the trace context of the event that led to its commands."""
    traces = traces or {}
    rows = [command_row(c, traces.get(c.subject)) for c in staged]
    cursor.executemany(insert_statement("orchestrator"), rows)


async def stage_rows(conn: AsyncConnection[Any], schema: str, rows: Sequence[OutboxRow]) -> None:
    """Stage rows made by ``outbox_row``, in this order, with one statement."""
    if not rows:
        return
    query = load_queries("workers.core")["outbox_insert_rows"].format(schema=sql.Identifier(schema))
    event_ids, keys, values, headers = (list(column) for column in zip(*rows, strict=True))
    await conn.execute(
        query, {"event_ids": event_ids, "keys": keys, "values": values, "headers": headers}
    )


def events_of(conn: Connection[Any], schema: str, payment_id: str) -> list[tuple[Event, bool]]:
    """The events ``schema`` emitted for a payment, oldest first, and whether each is published."""
    query = load_queries("workers.core")["outbox_events_of"].format(schema=sql.Identifier(schema))
    rows = conn.execute(query, (payment_id.encode(),)).fetchall()
    return [(decode(bytes(value)), published is not None) for value, published in rows]
