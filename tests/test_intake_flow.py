"""Intake end to end: HTTP request -> PostgreSQL -> outbox relay -> Kafka, and the status view."""

from __future__ import annotations

import json
import time

from tests.conftest import env_for
from tests.helpers.db import Conn
from tests.helpers.kafka import headers_of, read_topic
from tests.helpers.servers import free_port, running
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.config import Settings
from workers.core.events import decode
from workers.core.topics import topics


def test_accepted_payment_reaches_the_topic_keyed_with_headers(
    settings: Settings, db: Conn
) -> None:
    merchant = create_merchant(db, "Flow shop")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_for(settings)
    with (
        running(["serve-api", "--port", str(port)], env, health_url=url + "/healthz"),
        running(["run-outbox"], env),
    ):
        response = local_http.client().post(
            url + "/v1/payments",
            json={"amount": 4200, "currency": "EUR", "payment_method": "pm_card_visa"},
            headers={
                "Authorization": f"Bearer {merchant.api_key}",
                "Idempotency-Key": "flow-1",
                "X-Request-Id": "req-abc",
            },
        )
        assert response.status_code == 202
        payment = response.json()
        [message] = read_topic(settings, topics(settings).payments, 1)
        _wait_published(db)
    assert message.key() == payment["id"].encode()
    headers = headers_of(message)
    assert headers["ce_type"] == "payment.initiated"
    assert headers["ce_subject"] == payment["id"]
    assert headers["ce_merchantid"] == merchant.id
    assert headers["ce_correlationid"] == "req-abc"
    event = decode(message.value(), message.headers())  # type: ignore[arg-type]
    assert json.loads(message.value() or b"")["data"]["amount"] == 4200
    assert str(event.event_id) == headers["ce_id"]


def _wait_published(db: Conn) -> None:
    deadline = time.monotonic() + 30
    query = "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FROM api.outbox"
    while db.execute(query).fetchone() != (0, 1):
        assert time.monotonic() < deadline, "the relay never marked the row published"
        time.sleep(0.05)
