"""Load replay's shadow in bulk: its per-row checks suspended while it loads, restored after.

Every journal transaction written to the ledger fires two deferred balance triggers per row
(one per transaction and one per entry, each a query) and the foreign keys check every row:
most of the database's work in a replay. The shadow is private to the replay until the swap,
so it drops them while it loads and creates them again once the log is applied; what they
would have refused is still refused:

- balances: ``LedgerStore(bulk=True)`` checks each transaction as it is written, with the
  trigger's error, so an unbalanced posting is dead-lettered exactly as ``run-ledger`` does;
- foreign keys: created again over the loaded rows, which validates them all (a violation
  fails the replay, and the live ledger stays as it was);
- and ``ledger check`` runs on the whole shadow before the swap can happen.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import errors as pg_errors
from psycopg import sql

from workers.core.errors import FlowPayError
from workers.ledger.store import Conn, queries


class BulkLoadRefused(FlowPayError):
    """The loaded rows break a check that was suspended while they loaded."""


@dataclass(frozen=True)
class Suspended:
    kind: str  # "foreign key" or "trigger"
    table: str
    name: str
    definition: str  # from pg_get_constraintdef / pg_get_triggerdef


def suspend(conn: Conn, schema: str) -> list[Suspended]:
    """Drop ``schema``'s foreign keys and constraint triggers; returns what ``restore`` needs."""
    rows = conn.execute(queries(schema)["bulk_deferrable_checks"], {"schema": schema})
    suspended = [Suspended(str(k), str(t), str(n), str(d)) for k, t, n, d in rows.fetchall()]
    for s in suspended:
        table = sql.Identifier(schema, s.table)
        if s.kind == "trigger":
            conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(s.name), table))
        else:
            drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}")
            conn.execute(drop.format(table, sql.Identifier(s.name)))
    return suspended


def restore(conn: Conn, schema: str, suspended: list[Suspended]) -> None:
    """Create again what ``suspend`` dropped, foreign keys first (validating every row)."""
    with conn.transaction():
        for s in sorted(suspended, key=lambda s: s.kind != "foreign key"):
            # The definitions come from the catalog, as PostgreSQL itself prints them.
            statement: sql.Composable
            if s.kind == "trigger":
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
