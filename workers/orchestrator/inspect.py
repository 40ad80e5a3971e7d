"""What operators read of the orchestrator: sagas by state and type, one saga's whole history."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from workers.core.errors import FlowPayError
from workers.orchestrator.store import Conn, Q


def list_sagas(
    conn: Conn, *, state: str | None = None, type_: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The newest sagas first, narrowed to a state and a type when given."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(Q["sagas_list"], {"state": state, "type": type_, "limit": limit})
        return cursor.fetchall()


def saga_view(conn: Conn, saga_id: str) -> dict[str, Any]:
    """One saga: where it stands, each step (command, when sent, the answer), its timers."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(Q["saga_get"], {"id": saga_id})
        saga = cursor.fetchone()
        if saga is None:
            raise FlowPayError(f"no saga {saga_id}")
        cursor.execute(Q["saga_steps"], {"id": saga_id})
        steps = cursor.fetchall()
        cursor.execute(Q["saga_timers"], {"id": saga_id})
        timers = cursor.fetchall()
    return {**saga, "steps": steps, "timers": timers}


def sagas_of(conn: Conn, payment_id: str) -> list[dict[str, Any]]:
    """Every saga of a payment (its own, and one per refund), each as ``saga_view`` shows it."""
    rows = conn.execute(Q["sagas_of_subject"], {"subject": payment_id}).fetchall()
    return [saga_view(conn, row[0]) for row in rows]
