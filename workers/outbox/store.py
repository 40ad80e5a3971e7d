"""The relay's side of the outbox tables: claim, mark published, prune."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import args_row

from workers.core.config import Settings
from workers.core.events import Headers
from workers.core.outbox import EMITTING_SCHEMAS
from workers.core.sql import load_queries

Conn = psycopg.Connection[tuple[object, ...]]

# High half of every relay advisory key: FlowPay's tag, so the keys clash with no one else's.
_LOCK_NAMESPACE = 0x466C6F77 << 32


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    key: bytes
    value: bytes
    headers: Headers


@dataclass(frozen=True, slots=True)
class Pruned:
    outbox_rows: int
    idempotency_keys: int


def lock_key(schema: str) -> int:
    """The advisory lock key of one schema's outbox; derived, so a new schema needs no entry."""
    return _LOCK_NAMESPACE | zlib.crc32(f"outbox:{schema}".encode())


@cache
def query(name: str, schema: str = "api") -> sql.Composed:
    return load_queries("workers.outbox")[name].format(schema=sql.Identifier(schema))


def waiting(conn: Conn) -> list[str]:
    """The emitting schemas whose outbox has rows to publish, in EMITTING_SCHEMAS's order."""
    probes = sql.SQL(", ").join(query("waiting", schema) for schema in EMITTING_SCHEMAS)
    row = conn.execute(sql.SQL("SELECT {}").format(probes)).fetchone()
    return [schema for schema, pending in zip(EMITTING_SCHEMAS, row or (), strict=True) if pending]


def try_lock(conn: Conn, schema: str) -> bool:
    row = conn.execute(query("try_lock", schema), (lock_key(schema),)).fetchone()
    return row is not None and row[0] is True


def claim(conn: Conn, schema: str, limit: int) -> list[OutboxRow]:
    """The oldest unpublished rows; only the holder of the schema's lock may call this."""
    with conn.cursor(row_factory=args_row(_outbox_row)) as cursor:
        return cursor.execute(query("claim_batch", schema), (limit,)).fetchall()


def mark_published(conn: Conn, schema: str, ids: list[int]) -> None:
    conn.execute(query("mark_published", schema), (ids,))


def prune(conn: Conn, settings: Settings) -> Pruned:
    """Delete published rows past retention and completed idempotency keys past their TTL."""
    retention_s = settings.outbox.retention_hours * 3600
    ttl_s = settings.api.idempotency_ttl_hours * 3600
    rows = 0
    with conn.transaction():
        for schema in EMITTING_SCHEMAS:
            rows += conn.execute(query("prune_outbox", schema), (retention_s,)).rowcount
        keys = conn.execute(query("prune_idempotency_keys"), (ttl_s,)).rowcount
    return Pruned(outbox_rows=rows, idempotency_keys=keys)


def _outbox_row(id_: int, key: bytes, value: bytes, headers: list[list[Any]]) -> OutboxRow:
    # Stored as JSON strings (workers.core.outbox.outbox_row); Kafka wants bytes back.
    pairs: Headers = [(name, None if text is None else text.encode()) for name, text in headers]
    return OutboxRow(id=id_, key=key, value=value, headers=pairs)
