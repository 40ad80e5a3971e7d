"""The orchestrator's schema: load instances under lock, write decisions, claim due timers.

Every write of one batch (or one timer tick) happens in the caller's transaction, together with
the commands staged in ``orchestrator.outbox``: a saga moves and its command is issued, or
neither. Statements are set-based: one ``executemany`` per table per batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from workers.core.commands import CommandType
from workers.core.outbox import stage_commands
from workers.core.sql import load_queries
from workers.orchestrator.machine import Decision, Heard, Instance, SagaKey, StepRecord
from workers.orchestrator.sagas import OnTimeout, SagaState, SagaType

Q: Final = load_queries("workers.orchestrator")
Conn = Connection[Any]


def seen(conn: Conn, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these events were heard already (a redelivery changes nothing)."""
    rows = conn.execute(Q["events_seen"], {"ids": list(ids)}).fetchall()
    return {row[0] for row in rows}


def lock(conn: Conn, subjects: Iterable[str]) -> dict[SagaKey, Instance]:
    """The instances of these payments, locked until the transaction ends."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(Q["sagas_lock"], {"subjects": sorted(set(subjects))})
        instances = [instance_of(row) for row in cursor.fetchall()]
    return {(i.type, i.subject, i.reference): i for i in instances}


def claim_due(conn: Conn, now: datetime, limit: int) -> list[tuple[int, int, OnTimeout, Instance]]:
    """Due timers not held by anyone else: (timer id, its step, its action, the instance)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(Q["timers_claim"], {"now": now, "limit": limit})
        return [
            (row["timer_id"], row["timer_step_seq"], OnTimeout(row["action"]), instance_of(row))
            for row in cursor.fetchall()
        ]


def mark_fired(conn: Conn, timer_ids: Sequence[int], now: datetime) -> None:
    conn.execute(Q["timers_fired"], {"ids": list(timer_ids), "now": now})


def write(
    conn: Conn,
    decisions: Sequence[Decision],
    heard: Sequence[Heard],
    now: datetime,
    traces: Mapping[str, str] | None = None,
) -> None:
    """The decisions (in order) and what was done with each event heard; ``traces``: per
    subject, the trace context its commands carry (the event's that led to them)."""
    last = {d.instance.id: d for d in decisions}  # the instance as it stands at the end
    with conn.cursor() as cursor:
        if last:
            cursor.executemany(
                Q["saga_upsert"], [_saga_params(d.instance, now) for d in last.values()]
            )
            cursor.executemany(
                Q["step_upsert"], [_step_row(d.instance.id, s) for d in decisions for s in d.steps]
            )
            cursor.execute(Q["timers_disarm"], {"ids": list(last), "now": now})
            armed = [(i, d.instance.current.seq, d.timer.action.value, d.timer.due_at, now)
                     for i, d in last.items() if d.timer is not None]  # fmt: skip
            if armed:
                cursor.executemany(Q["timer_arm"], armed)
            stage_commands(cursor, [c for d in decisions for c in d.commands], traces)
        if heard:
            cursor.executemany(Q["event_insert"], [_heard_row(h) for h in heard])


def instance_of(row: dict[str, Any]) -> Instance:
    command_type = row["command_type"]
    current = StepRecord(
        seq=row["seq"],
        name=row["name"],
        compensation=row["compensation"],
        command_type=None if command_type is None else CommandType(command_type),
        command_id=row["command_id"],
        attempts=row["attempts"],
        entered_at=row["entered_at"],
        sent_at=row["sent_at"],
        answer_id=row["answer_id"],
        answer_type=row["answer_type"],
        answered_at=row["answered_at"],
    )
    return Instance(
        id=row["id"],
        definition=row["definition"],
        type=SagaType(row["type"]),
        subject=row["subject"],
        reference=row["reference"],
        merchant_id=row["merchant_id"],
        correlation_id=row["correlation_id"],
        state=SagaState(row["state"]),
        step=row["step"],
        completed=tuple(row["completed"]),
        context=row["context"],
        outcome=row["outcome"],
        current=current,
    )


def _saga_params(instance: Instance, now: datetime) -> dict[str, Any]:
    return {
        "id": instance.id,
        "type": instance.type.value,
        "definition": instance.definition,
        "subject": instance.subject,
        "reference": instance.reference,
        "merchant_id": instance.merchant_id,
        "correlation_id": instance.correlation_id,
        "state": instance.state.value,
        "step": instance.step,
        "step_seq": instance.current.seq,
        "completed": list(instance.completed),
        "context": Jsonb(dict(instance.context)),
        "outcome": instance.outcome,
        "now": now,
    }


def _step_row(saga_id: str, step: StepRecord) -> tuple[Any, ...]:
    command_type = None if step.command_type is None else step.command_type.value
    return (saga_id, step.seq, step.name, step.compensation, command_type, step.command_id,
            step.attempts, step.entered_at, step.sent_at, step.answer_id, step.answer_type,
            step.answered_at)  # fmt: skip


def _heard_row(heard: Heard) -> tuple[Any, ...]:
    event = heard.event
    return (event.event_id, event.type.value, event.payment_id, heard.saga_id, heard.effect,
            heard.detail, event.occurred_at)  # fmt: skip
