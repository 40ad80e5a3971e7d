"""A merchant of the notifier's tests: its webhook endpoints, and its payments' events on Kafka.

The events go straight to the payments topic, as the processor would publish them, so that a
test runs the notifier alone.
"""

from __future__ import annotations

import time
from typing import Any

from tests.helpers.db import Conn
from workers.api.merchants import create_merchant
from workers.core.config import Settings
from workers.core.events import EventType, Failed, Initiated, Succeeded, encode, new_event
from workers.core.kafka import make_producer, produce_sync
from workers.core.sealing import keyring
from workers.core.topics import topics
from workers.notifier.endpoints import NewEndpoint, register_endpoint

# Compressed for tests: four attempts a fraction of a second apart, short deadlines and polls.
FAST = {
    "FLOWPAY_NOTIFIER__SCHEDULE_S": "[0, 0.3, 0.3, 0.3]",
    # Short enough for the retry tests, long enough for a receiver on a machine the whole
    # parallel suite loads (at 1 s, first attempts timed out and were retried).
    "FLOWPAY_NOTIFIER__ATTEMPT_DEADLINE_S": "3",
    "FLOWPAY_NOTIFIER__LEASE_S": "6",
    "FLOWPAY_NOTIFIER__POLL_INTERVAL_S": "0.1",
    "FLOWPAY_WORKER__POLL_TIMEOUT_S": "0.1",
}


class Shop:
    """A merchant with one endpoint at ``url`` (registered under ``settings``' URL rules)."""

    def __init__(self, settings: Settings, db: Conn, url: str, name: str = "Hooked shop") -> None:
        self.settings = settings
        self.db = db
        merchant = create_merchant(db, name)
        self.merchant_id = merchant.id
        self.endpoint: NewEndpoint = register_endpoint(
            db, merchant.id, url, settings.notifier, keyring(settings)
        )
        self.producer = make_producer(settings, "operator")

    def publish(self, payment_id: str, *kinds: EventType) -> None:
        data = {
            EventType.INITIATED: Initiated(
                amount=1999, currency="USD", payment_method="pm_card_visa"
            ),
            EventType.SUCCEEDED: Succeeded(charge_id="ch_1"),
            EventType.FAILED: Failed(reason="card_declined"),
        }
        for kind in kinds:
            event = new_event(
                kind,
                payment_id=payment_id,
                merchant_id=self.merchant_id,
                data=data[kind],
                source="test",
            )
            encoded = encode(event)
            produce_sync(
                self.producer,
                topics(self.settings).payments,
                key=encoded.key,
                value=encoded.value,
                headers=encoded.headers,
            )

    def delivery(self) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT id, status, attempts, next_attempt_at, last_error FROM notifier.deliveries WHERE merchant_id = %s",
            (self.merchant_id,),
        ).fetchone()
        assert row is not None
        keys = ("id", "status", "attempts", "next_attempt_at", "last_error")
        return dict(zip(keys, row, strict=True))

    def wait_status(self, status: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                delivery = self.delivery()
                if delivery["status"] == status:
                    return delivery
            except AssertionError:
                pass
            assert time.monotonic() < deadline, f"delivery never became {status}"
            time.sleep(0.05)

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT attempt, status_code, error, response_head FROM notifier.attempts"
            " WHERE delivery_id = %s ORDER BY id",
            (delivery_id,),
        ).fetchall()
        return [
            dict(zip(("attempt", "status_code", "error", "head"), r, strict=True)) for r in rows
        ]
