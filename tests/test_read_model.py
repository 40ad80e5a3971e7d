"""The API's read model on the real database: what it records for each kind of event."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, cast

import psycopg

from tests.conftest import ROOT, env_for, override
from tests.helpers.servers import free_port
from workers.api import read_model
from workers.api.read_model import ReadModel
from workers.core.config import Settings
from workers.core.db import make_pool
from workers.core.events import Event, EventType, Initiated, Processing, new_event
from workers.core.kafka import Message

Conn = psycopg.Connection[tuple[Any, ...]]


def started(payment_id: str) -> tuple[Event, Event]:
    """A payment's initiated and processing events."""
    initiated = new_event(
        EventType.INITIATED, payment_id=payment_id, merchant_id="mer_rm", source="test",
        data=Initiated(amount=1999, currency="USD", payment_method="pm_card_visa"),
    )  # fmt: skip
    processing = new_event(
        EventType.PROCESSING, payment_id=payment_id, merchant_id="mer_rm", source="test",
        data=Processing(),
    )  # fmt: skip
    return initiated, processing


def test_initiated_events_cost_no_transaction_later_ones_are_recorded(
    settings: Settings, db: Conn
) -> None:
    initiated, processing = started("pay_rm")
    pool = make_pool(settings, name="test-read-model")
    try:
        model = ReadModel(pool)
        for event in (initiated, processing):
            model.handle(event, cast(Message, None))
    finally:
        pool.close()
    stored = [row[0] for row in db.execute("SELECT event_id FROM api.processed_events")]
    # The intake wrote the payment with its initiated event; only later events change the view.
    assert stored == [processing.event_id]


def test_a_batch_is_applied_in_one_go_each_event_once(settings: Settings, db: Conn) -> None:
    initiated, processing = started("pay_rb")
    none = cast(Message, None)
    pool = make_pool(settings, name="test-read-model")
    try:
        ReadModel(pool).handle_batch([(initiated, none), (processing, none), (processing, none)])
    finally:
        pool.close()
    stored = [row[0] for row in db.execute("SELECT event_id FROM api.processed_events")]
    assert stored == [processing.event_id]


def _unstartable(settings: Settings) -> Settings:
    """Settings whose consumer librdkafka refuses to create (the checks are bypassed)."""
    return override(settings, "kafka", session_timeout_ms=-1)


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
