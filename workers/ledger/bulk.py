"""Load replay's shadow in bulk: its per-row checks suspended while it loads, restored after.

Every journal transaction written to the ledger fires two deferred balance triggers per row
(one per transaction and one per entry, each a query), the foreign keys check every row, and
every index takes every row as it comes: most of the database's work in a replay. The shadow is
private to the replay until the swap, so it drops them while it loads and creates them again
once the log is applied; what they would have refused is still refused:

- balances: ``LedgerStore(bulk=True)`` checks each transaction as it is written, with the
  trigger's error, so an unbalanced posting is dead-lettered exactly as ``run-ledger`` does;
- foreign keys and unique constraints: created again over the loaded rows, which validates them
  all (a violation fails the replay, and the live ledger stays as it was). Only indexes that no
  statement of a load reads are dropped (``UNREAD_WHILE_LOADING``); the unique ones among them
  hold by construction (the planner numbers the chain, derives ids from event ids, and resolves
  a pending transaction once), so a violation would be a defect, never a message to skip;
- and ``ledger check`` runs on the whole shadow before the swap can happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from psycopg import errors as pg_errors
from psycopg import sql

from workers.core.errors import FlowPayError
from workers.ledger.store import Conn, queries


class BulkLoadRefused(FlowPayError):
    """The loaded rows break a check that was suspended while they loaded."""


@dataclass(frozen=True)
class Suspended:
    kind: str  # "foreign key", "trigger", "unique" or "index"
    table: str
    name: str
    definition: str  # from pg_get_constraintdef / pg_get_triggerdef / pg_get_indexdef


# The indexes that a load maintains row by row and never reads: it finds applied events by
# ``events_pkey`` and a payment's postings by ``transactions_once_per_reference`` and
# ``entries_pkey``, and writes with COPY, never ON CONFLICT.
UNREAD_WHILE_LOADING: Final = (
    "events_offset_once",
    "events_by_payment",
    "transactions_pkey",
    "transactions_resolved_once",
    "transactions_chain_position",
    "transactions_source",
)
# Dropped in this order (a foreign key before the unique index it references), created again
# in the reverse one (each foreign key over rows already unique, the triggers last).
_DROP_ORDER: Final = ("trigger", "foreign key", "unique", "index")


def suspend(conn: Conn, schema: str) -> list[Suspended]:
    """Drop what ``schema`` can load without; returns what ``restore`` needs."""
    params = {"schema": schema, "unread": list(UNREAD_WHILE_LOADING)}
    rows = conn.execute(queries(schema)["bulk_deferrable_checks"], params).fetchall()
    suspended = sorted(
        (Suspended(str(k), str(t), str(n), str(d)) for k, t, n, d in rows),
        key=lambda s: _DROP_ORDER.index(s.kind),
    )
    for s in suspended:
        table = sql.Identifier(schema, s.table)
        if s.kind == "trigger":
            conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(s.name), table))
        elif s.kind == "index":
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, s.name)))
        else:
            drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}")
            conn.execute(drop.format(table, sql.Identifier(s.name)))
    return suspended


def restore(conn: Conn, schema: str, suspended: list[Suspended]) -> None:
    """Create again what ``suspend`` dropped, validating every row."""
    with conn.transaction():
        for s in sorted(suspended, key=lambda s: -_DROP_ORDER.index(s.kind)):
            # The definitions come from the catalog, as PostgreSQL itself prints them.
            statement: sql.Composable
            if s.kind in ("trigger", "index"):
                statement = sql.SQL(s.definition)
            else:
                statement = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.Identifier(schema, s.table),
                    sql.Identifier(s.name),
                    sql.SQL(s.definition),
                )
            try:
                conn.execute(statement)
            except pg_errors.IntegrityError as exc:
                raise BulkLoadRefused(f"the rebuilt ledger breaks {s.name}: {exc}") from exc
