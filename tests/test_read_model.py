"""The API's read model on the engine, on the real database: what it records for each event."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, env_for, override
from tests.helpers.db import Conn
from tests.helpers.engine import running
from tests.helpers.kafka import committed_total, produce_events
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for
from workers.api import read_model
from workers.api.read_model import ReadModel, subscriber
from workers.core.config import Settings
from workers.core.db import admin_url, make_pool
from workers.core.events import (
    ChargeReversed,
    Event,
    EventData,
    EventType,
    Failed,
    Initiated,
    NextAction,
    Processing,
    RedirectToUrl,
    Refunded,
    RefundFailed,
    RequiresAction,
    Succeeded,
    new_event,
)
from workers.core.projection import advance, initial
from workers.core.topics import GROUP_API, topics

MERCHANT = "mer_rm"
AMOUNT = 1000


def ev(type_: EventType, payment_id: str, data: EventData) -> Event:
    return new_event(type_, payment_id=payment_id, merchant_id=MERCHANT, data=data, source="test")


def initiated(payment_id: str) -> Event:
    data = Initiated(amount=AMOUNT, currency="USD", payment_method="pm_card_visa")
    return ev(EventType.INITIATED, payment_id, data)


def stored(db: Conn, *payments: Event) -> None:
    """The payments as the intake stores them, with their initiated events."""
    db.execute(
        "INSERT INTO api.merchants (id, name) VALUES (%s, 'RM') ON CONFLICT DO NOTHING", (MERCHANT,)
    )
    for e in payments:
        db.execute(
            """INSERT INTO api.payments (id, merchant_id, amount, currency, payment_method,
               created_at, updated_at) VALUES (%s, %s, %s, 'USD', 'pm_card_visa', %s, %s)""",
            (e.payment_id, MERCHANT, AMOUNT, e.occurred_at, e.occurred_at),
        )


@contextmanager
def read_model_running(settings: Settings) -> Iterator[None]:
    pool = make_pool(settings, "api", name="test-read-model")
    try:
        with running(settings, subscriber(ReadModel(pool))):
            yield
    finally:
        pool.close()


def consumed(settings: Settings, count: int) -> None:
    payments = topics(settings).payments
    wait_for(
        lambda: committed_total(settings, GROUP_API, payments) == count, what=f"{count} consumed"
    )


def test_every_event_is_recorded_once_and_later_ones_change_the_view(
    settings: Settings, db: Conn
) -> None:
    start = initiated("pay_rm")
    processing = ev(EventType.PROCESSING, "pay_rm", Processing())
    stored(db, start)
    produce_events(settings, [start, processing, processing])  # the last: a redelivery
    with read_model_running(settings):
        consumed(settings, 3)
    recorded = db.execute("SELECT id, type, data->>'status' FROM api.events ORDER BY created_at")
    # Each event once (for GET /v1/events), with the payment as it stood just after it.
    assert recorded.fetchall() == [
        (start.event_id, "payment.initiated", "initiated"),
        (processing.event_id, "payment.processing", "processing"),
    ]
    # The intake wrote the payment with its initiated event; only later events change the view.
    assert db.execute("SELECT status, version FROM api.payments").fetchone() == ("processing", 2)


def test_each_change_of_a_batch_gets_its_own_version_and_a_notification(
    settings: Settings, db: Conn
) -> None:
    start = initiated("pay_rb")
    stored(db, start)
    events = [
        ev(EventType.PROCESSING, "pay_rb", Processing()),
        ev(EventType.SUCCEEDED, "pay_rb", Succeeded(charge_id="ch_1")),
        ev(
            EventType.REFUNDED, "pay_rb", Refunded(refund_id="re_1", amount=400, refunded_total=400)
        ),
        ev(
            EventType.REFUNDED,
            "pay_rb",
            Refunded(refund_id="re_2", amount=600, refunded_total=AMOUNT),
        ),
    ]
    produce_events(settings, [start, *events])
    with psycopg.connect(admin_url(settings), autocommit=True) as listener:
        listener.execute("LISTEN flowpay_payment_changes")
        with read_model_running(settings):
            consumed(settings, 5)
        woken = {n.payload for n in listener.notifies(timeout=5, stop_after=1)}
    changes = db.execute(
        "SELECT version, status, refunded_amount FROM api.payment_changes ORDER BY version"
    ).fetchall()
    assert changes == [
        (2, "processing", 0),
        (3, "succeeded", 0),
        (4, "succeeded", 400),
        (5, "refunded", AMOUNT),
    ]
    assert woken == {"pay_rb"}


WAITING = RequiresAction(
    charge_id="pi_1",
    next_action=NextAction(
        type="redirect_to_url", redirect_to_url=RedirectToUrl(url="https://hooks.stripe.com/3ds")
    ),
)
# Each payment's events after payment.initiated: every path the status rules know, late and
# repeated events among them.
SEQUENCES: dict[str, list[tuple[EventType, EventData]]] = {
    "ok": [(EventType.PROCESSING, Processing()), (EventType.SUCCEEDED, Succeeded(charge_id="c"))],
    "direct": [(EventType.SUCCEEDED, Succeeded(charge_id="c"))],
    "declined": [
        (EventType.PROCESSING, Processing()),
        (EventType.FAILED, Failed(reason="card_declined")),
    ],
    "timeout": [(EventType.FAILED, Failed(reason="gateway_timeout"))],
    "late": [
        (EventType.PROCESSING, Processing()),
        (EventType.SUCCEEDED, Succeeded(charge_id="c")),
        (EventType.PROCESSING, Processing()),
        (EventType.FAILED, Failed(reason="gateway_error")),
    ],
    "failed then reversed": [
        (EventType.FAILED, Failed(reason="gateway_timeout")),
        (EventType.CHARGE_REVERSED, ChargeReversed(charge_id="c", amount=AMOUNT)),
        (EventType.SUCCEEDED, Succeeded(charge_id="c")),
    ],
    "refunded in two": [
        (EventType.SUCCEEDED, Succeeded(charge_id="c")),
        (EventType.REFUNDED, Refunded(refund_id="r1", amount=300, refunded_total=300)),
        (EventType.REFUND_FAILED, RefundFailed(refund_id="r2", reason="declined")),
        (EventType.REFUNDED, Refunded(refund_id="r3", amount=700, refunded_total=AMOUNT)),
    ],
    "refund totals out of order": [
        (EventType.SUCCEEDED, Succeeded(charge_id="c")),
        (EventType.REFUNDED, Refunded(refund_id="r2", amount=200, refunded_total=500)),
        (EventType.REFUNDED, Refunded(refund_id="r1", amount=300, refunded_total=300)),
    ],
    "3-D Secure, then succeeded": [
        (EventType.PROCESSING, Processing()),
        (EventType.REQUIRES_ACTION, WAITING),
        (EventType.SUCCEEDED, Succeeded(charge_id="pi_1")),
    ],
    "3-D Secure, still waiting": [
        (EventType.PROCESSING, Processing()),
        (EventType.REQUIRES_ACTION, WAITING),
        (EventType.PROCESSING, Processing()),
    ],
    "3-D Secure, expired": [
        (EventType.REQUIRES_ACTION, WAITING),
        (EventType.FAILED, Failed(reason="action_expired")),
        (EventType.REQUIRES_ACTION, WAITING),
    ],
    "refunded before settled": [
        (EventType.REFUNDED, Refunded(refund_id="r1", amount=AMOUNT, refunded_total=AMOUNT)),
        (EventType.SUCCEEDED, Succeeded(charge_id="c")),
    ],
}


@pytest.fixture
def every_path(settings: Settings, db: Conn) -> dict[str, list[Event]]:
    """Each sequence as one payment's events, published in order (a repeat of each too)."""
    paths = {}
    for n, steps in enumerate(SEQUENCES.values()):
        payment_id = f"pay_path{n}"
        paths[payment_id] = [initiated(payment_id), *(ev(t, payment_id, d) for t, d in steps)]
    stored(db, *(events[0] for events in paths.values()))
    produce_events(settings, [e for events in paths.values() for e in [*events, events[-1]]])
    return paths


def test_the_read_model_and_the_projection_apply_the_same_status_rules(
    settings: Settings, db: Conn, every_path: dict[str, list[Event]]
) -> None:
    with read_model_running(settings):
        consumed(settings, sum(len(events) + 1 for events in every_path.values()))
    for payment_id, events in every_path.items():
        expected = initial(events[0])
        for e in events[1:]:
            expected = advance(expected, e)
        row = db.execute(
            "SELECT status, refunded_amount, failure_reason, next_action FROM api.payments"
            " WHERE id = %s",
            (payment_id,),
        ).fetchone()
        wanted = (expected["status"], expected["refunded_amount"], expected["failure_reason"],
                  expected["next_action"])  # fmt: skip
        assert row == wanted, payment_id


def _unstartable(settings: Settings) -> Settings:
    """Settings whose consumer librdkafka refuses to create (the checks are bypassed)."""
    return override(settings, "kafka", session_timeout_ms=-1)


def _native_names() -> dict[int, str]:
    """This process's threads as the kernel names them, by thread id."""
    names = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            names[int(task.name)] = (task / "comm").read_text().rstrip("\n")
        except OSError:
            continue  # a thread that ended meanwhile
    return names


def test_the_read_models_threads_are_named_for_the_os(settings: Settings, db: Conn) -> None:
    start = initiated("pay_rn")
    stored(db, start)
    produce_events(settings, [start, ev(EventType.PROCESSING, "pay_rn", Processing())])
    stop = threading.Event()
    thread = read_model.start(settings, stop)
    try:
        consumed(settings, 2)
        names = _native_names()
        # Its own thread, and the engine's Kafka and handler threads (cut to 15 bytes).
        assert thread.native_id is not None
        assert names[thread.native_id] == read_model.ROLE
        assert sum(name == f"{read_model.ROLE}-" for name in names.values()) >= 2, names
    finally:
        stop.set()
        thread.join(30)
    assert db.execute("SELECT status FROM api.payments").fetchone() == ("processing",)


def test_a_read_model_that_dies_stops_its_process(settings: Settings) -> None:
    deaths: list[None] = []
    thread = read_model.start(
        _unstartable(settings), threading.Event(), on_death=lambda: deaths.append(None)
    )
    try:
        thread.join(30)
        assert not thread.is_alive()
        assert deaths == [None]
        assert read_model.died.is_set()
    finally:
        read_model.died.clear()


SERVER = """
import sys, uvicorn
from tests.test_read_model import _unstartable
from workers.api.app import create_app
from workers.core.config import load_settings
uvicorn.run(create_app(_unstartable(load_settings())), port=int(sys.argv[1]), log_config=None)
"""


def test_a_server_whose_read_model_dies_shuts_down(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(free_port())],
            cwd=ROOT,
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            server.wait(60)  # rather than serve statuses that would never move again
        finally:
            server.kill()
    assert "the read model stopped; this server process stops too" in log.read_text()
