"""Hostile webhook endpoints beside a well-behaved merchant, on real processes (issue 13).

Five merchants' endpoints misbehave (a zoneless ``Retry-After``, NUL bytes, a 100 MiB body, a
byte a second, no answer at all) while a sixth merchant takes 200 payments through the whole
stack: API, relay, processor, gateway simulator, Kafka, PostgreSQL and ``flowpay run-notifier``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers.db import Conn
from tests.helpers.flow import Flow, flow
from tests.helpers.hostile import BEHAVIOURS, DRIP, HUGE, NUL, SILENT, ZONELESS, hostile_endpoints
from tests.helpers.receiver import receiver
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.config import NotifierSettings, Settings
from workers.core.db import admin_url
from workers.core.sealing import keyring
from workers.notifier.endpoints import register_endpoint

SCHEDULE_S = (0, 0.5, 0.5)  # three attempts: every hostile delivery runs to its end in the test
HOSTILE_ENV = {
    "FLOWPAY_NOTIFIER__SCHEDULE_S": str(list(SCHEDULE_S)),
    "FLOWPAY_NOTIFIER__JITTER": "0",
    "FLOWPAY_NOTIFIER__ATTEMPT_DEADLINE_S": "2",
    "FLOWPAY_NOTIFIER__LEASE_S": "5",
    "FLOWPAY_NOTIFIER__POLL_INTERVAL_S": "0.2",
    "FLOWPAY_NOTIFIER__MAX_RETRY_AFTER_S": "5",
}
GOOD_PAYMENTS = 200
HOSTILE_PAYMENTS = 8  # each: twice what one endpoint may have in flight
MAX_LATENCY_S = 5.0  # from a payment's terminal event to its webhook
MAX_RSS_BYTES = 200 * 1024 * 1024

pytestmark = pytest.mark.serial


def test_hostile_endpoints_hold_up_no_other_merchant(settings: Settings, tmp_path: Path) -> None:
    with (
        receiver(free_port()) as good,
        hostile_endpoints(free_port()) as bad,
        flow(settings, tmp_path, extra_env=HOSTILE_ENV) as f,
    ):
        with psycopg.connect(admin_url(settings), autocommit=True) as conn:
            good.secret = register_endpoint(
                conn, f.merchant_id, good.url, settings.notifier, keyring(settings)
            ).secret
        hostile_keys = _hostile_merchants(settings, bad.url)
        f.start("notifier", ["run-notifier"])
        notifier = f.processes["notifier"]
        warm_up = f.pay()["id"]  # measured from when the notifier is up and consuming
        wait_for(lambda: len(good.got) == 1, 120, "the notifier to be up")
        # The hostile merchants' deliveries come first: the oldest, and due first. Then the
        # good merchant's steady traffic (two clients), rather than a burst of its own.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda key: _pay(f, key), hostile_keys * HOSTILE_PAYMENTS))
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: f.pay(), range(GOOD_PAYMENTS)))

        wait_for(lambda: len(good.got) > GOOD_PAYMENTS, 240, "the good merchant's webhooks")
        measured = [r for r in good.got if r.body["data"]["id"] != warm_up]
        late = {
            r.body["data"]["id"]: round(r.at - _epoch(r.body["timestamp"]), 2)
            for r in measured
            if r.at - _epoch(r.body["timestamp"]) > MAX_LATENCY_S
        }
        assert late == {}, f"webhooks more than {MAX_LATENCY_S} s after their event"
        assert len({r.body["data"]["id"] for r in measured}) == GOOD_PAYMENTS
        assert all(r.signature_ok for r in good.got)

        with psycopg.connect(admin_url(settings), autocommit=True) as db:
            wait_for(lambda: _hostile_pending(db) == 0, 180, "hostile deliveries to run out")
            _assert_each_ran_its_schedule(db)
            assert _vm_hwm_bytes(notifier.pid) < MAX_RSS_BYTES
        assert notifier.poll() is None
    assert set(bad.requests) == set(BEHAVIOURS)
    assert max(bad.most_open.values()) <= NotifierSettings().max_in_flight_per_endpoint, (
        bad.most_open
    )


def _hostile_merchants(settings: Settings, url_of: Any) -> list[str]:
    keys = []
    sealing = keyring(settings)
    with psycopg.connect(admin_url(settings), autocommit=True) as conn:
        for behaviour in BEHAVIOURS:
            merchant = create_merchant(conn, f"Hostile {behaviour}")
            register_endpoint(conn, merchant.id, url_of(behaviour), settings.notifier, sealing)
            keys.append(merchant.api_key)
    return keys


def _pay(f: Flow, api_key: str) -> None:
    response = local_http.client().post(
        f.api_url + "/v1/payments",
        json={"amount": 500, "currency": "USD", "payment_method": "pm_card_visa"},
        headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"h-{time.time_ns()}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _hostile_pending(db: Conn) -> int:
    row = db.execute(
        "SELECT count(*) FROM notifier.deliveries d JOIN api.merchants m ON m.id = d.merchant_id"
        " WHERE m.name LIKE 'Hostile %%' AND d.status <> 'failed'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _assert_each_ran_its_schedule(db: Conn) -> None:
    deliveries = db.execute(
        "SELECT d.id, substring(m.name from 9), d.status, d.attempts"
        " FROM notifier.deliveries d JOIN api.merchants m ON m.id = d.merchant_id"
        " WHERE m.name LIKE 'Hostile %%'"
    ).fetchall()
    assert len(deliveries) == len(BEHAVIOURS) * HOSTILE_PAYMENTS
    for delivery_id, behaviour, status, attempts in deliveries:
        assert (status, attempts) == ("failed", len(SCHEDULE_S)), (behaviour, status, attempts)
        recorded = db.execute(
            "SELECT attempt, started_at, duration_ms, status_code, error, response_head"
            " FROM notifier.attempts WHERE delivery_id = %s ORDER BY attempt",
            (delivery_id,),
        ).fetchall()
        assert [r[0] for r in recorded] == [1, 2, 3], behaviour
        for _, _, duration_ms, status_code, error, head in recorded:
            _assert_attempt(behaviour, duration_ms, status_code, error, head)
        if behaviour == ZONELESS:  # after its Retry-After (2 s), not the schedule's 0.5 s
            gap = (recorded[1][1] - recorded[0][1]).total_seconds()
            assert gap >= 1.0, gap


def _assert_attempt(
    behaviour: str, duration_ms: int, status_code: int | None, error: str | None, head: str | None
) -> None:
    assert duration_ms <= 2000 + 500, (behaviour, duration_ms)  # the deadline, and a margin
    if behaviour in (DRIP, SILENT):
        assert (status_code, error) == (None, "timeout"), behaviour
    elif behaviour == ZONELESS:
        assert status_code == 503
    elif behaviour == NUL:
        assert (status_code, head) == (500, '\ufffd\ufffd{"error": "\ufffd\ufffd\ufffd oops"}')
    elif behaviour == HUGE:
        assert (status_code, head) == (500, "x" * 1024)  # the first KiB kept


def _vm_hwm_bytes(pid: int) -> int:
    """The process's peak resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
