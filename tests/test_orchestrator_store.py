"""The orchestrator's batches and timers against its real schema (PostgreSQL; no Kafka: the
batches are built as the engine builds them)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.helpers.messages import received
from workers.core import commands
from workers.core.commands import CommandType
from workers.core.config import Settings
from workers.core.consuming import Batch
from workers.core.db import admin_url
from workers.core.events import Event, EventType, Initiated, RequiresCapture, new_event
from workers.orchestrator import db
from workers.orchestrator.service import Orchestrator


@pytest.fixture
def orchestrator(settings: Settings) -> Iterator[Orchestrator]:
    pool = db.pool(settings)
    try:
        yield Orchestrator(settings, pool)
    finally:
        pool.close()


def _batch(events: list[Event]) -> Batch:
    items = [received(0, n, e, e.payment_id.encode()) for n, e in enumerate(events)]
    return Batch(items, dead_letter=lambda _m, _e: None)


def _manual(payment_id: str) -> Event:
    data = Initiated(amount=700, currency="EUR", payment_method="pm_card_visa")
    return new_event(EventType.AUTHORIZATION_REQUESTED, payment_id=payment_id,
                     merchant_id="m_1", data=data, source="test")  # fmt: skip


def _rows(settings: Settings, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(admin_url(settings)) as conn:
        return conn.execute(query).fetchall()


def _commands(settings: Settings) -> list[commands.Command]:
    rows = _rows(settings, "SELECT value FROM orchestrator.outbox ORDER BY id")
    return [commands.decode(bytes(value)) for (value,) in rows]


def test_a_redelivered_batch_changes_nothing(
    settings: Settings, orchestrator: Orchestrator
) -> None:
    started = _manual("pay_a")
    orchestrator.hear(_batch([started]))
    authorized = new_event(
        EventType.REQUIRES_CAPTURE, payment_id="pay_a", merchant_id="m_1", source="test",
        data=RequiresCapture(authorization_id="auth_1", amount_capturable=700),
    )  # fmt: skip
    orchestrator.hear(_batch([started, authorized]))
    orchestrator.hear(_batch([started, authorized]))  # the whole batch again, after a crash

    assert [c.type for c in _commands(settings)] == [CommandType.AUTHORIZE]
    assert _rows(settings, "SELECT id, state, step FROM orchestrator.sagas") == [
        ("payment:pay_a", "waiting", "await_decision")
    ]
    effects = _rows(settings, "SELECT type, effect FROM orchestrator.events ORDER BY received_at")
    assert effects == [
        ("payment.authorization_requested", "started"),
        ("payment.requires_capture", "advanced"),
    ]
    timers = _rows(settings, "SELECT action, status FROM orchestrator.timers ORDER BY id")
    assert timers == [("resend", "canceled"), ("compensate", "armed")]


def test_due_timers_fire_once_and_stale_ones_do_nothing(
    settings: Settings, orchestrator: Orchestrator
) -> None:
    orchestrator.hear(_batch([_manual("pay_b"), _manual("pay_c")]))
    now = datetime.now(UTC)
    assert orchestrator.fire_due(now) == 0  # nothing is due yet
    later = now + timedelta(seconds=settings.orchestrator.command_timeout_s + 1)
    assert orchestrator.fire_due(later) == 2
    assert orchestrator.fire_due(later) == 0  # fired once, re-armed further on

    resent = [c for c in _commands(settings) if c.attempt == 2]
    assert sorted(c.subject for c in resent) == ["pay_b", "pay_c"]
    assert {c.type for c in resent} == {CommandType.AUTHORIZE}
    statuses = _rows(
        settings, "SELECT status, count(*) FROM orchestrator.timers GROUP BY status ORDER BY 1"
    )
    assert statuses == [("armed", 2), ("fired", 2)]
