"""The write side of the transactional outbox: stage events in the caller's transaction.

Each emitting service has ``<schema>.outbox``; the relay (``workers.outbox``) publishes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from psycopg import AsyncConnection, AsyncCursor, Connection, Cursor, sql
from psycopg.types.json import Jsonb

from workers.core import tracing
from workers.core.events import Event, decode, encode
from workers.core.sql import load_queries

EMITTING_SCHEMAS: Final = ("api", "processor")


def insert_statement(schema: str) -> sql.Composed:
    return load_queries("workers.core")["outbox_insert"].format(schema=sql.Identifier(schema))


OutboxRow = tuple[Any, ...]


def outbox_row(event: Event) -> OutboxRow:
    """The event as its outbox row, carrying the current span's trace context: build it where
    that span is current, even when the row is written later with others."""
    encoded = encode(event)
    headers = [
        [name, value.decode() if isinstance(value, bytes) else value]
        for name, value in tracing.inject(encoded.headers)
    ]
    return (event.event_id, encoded.key, encoded.value, Jsonb(headers))


def stage(cursor: Cursor[Any], schema: str, events: Iterable[Event]) -> None:
    cursor.executemany(insert_statement(schema), [outbox_row(e) for e in events])


async def stage_async(cursor: AsyncCursor[Any], schema: str, events: Iterable[Event]) -> None:
    await cursor.executemany(insert_statement(schema), [outbox_row(e) for e in events])


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
