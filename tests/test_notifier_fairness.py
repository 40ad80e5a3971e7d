"""Claims are fair across endpoints and bounded per endpoint, over every notifier process.

Real ``flowpay run-notifier`` processes, Kafka and PostgreSQL; one endpoint's backlog is 10,000
due deliveries to a server that never answers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import env_for
from tests.helpers.db import Conn
from tests.helpers.hostile import SILENT, Hostile, hostile_endpoints
from tests.helpers.receiver import Receiver, receiver
from tests.helpers.servers import free_port, running
from tests.helpers.shop import FAST, Shop
from tests.helpers.waiting import wait_for
from workers.core.config import NotifierSettings, Settings
from workers.core.events import EventType

BACKLOG = 10_000
PER_ENDPOINT = NotifierSettings().max_in_flight_per_endpoint  # the default, which this runs
FRESH_WITHIN_S = 2.0

pytestmark = pytest.mark.serial


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver(free_port()) as r:
        yield r


@pytest.fixture
def silent() -> Iterator[Hostile]:
    with hostile_endpoints(free_port()) as h:
        yield h


def test_a_backlog_of_one_endpoint_does_not_delay_anothers_fresh_delivery(
    settings: Settings, db: Conn, hook: Receiver, silent: Hostile
) -> None:
    flooded = Shop(settings, db, silent.url(SILENT), "Flooded shop")
    _backlog(db, flooded, BACKLOG)
    fresh = Shop(settings, db, hook.url, "Fresh shop")
    hook.secret = fresh.endpoint.secret
    env = {**env_for(settings), **FAST}
    with running(["run-notifier"], env), running(["run-notifier"], env):
        wait_for(lambda: silent.open_now[SILENT] > 0, 60, "the backlog to be worked on")
        fresh.publish("pay_F", EventType.INITIATED, EventType.SUCCEEDED)
        [got] = hook.wait_for(1)
        waited = got.at - _created_at(db, got.webhook_id)
        assert waited <= FRESH_WITHIN_S, f"a fresh delivery waited {waited:.2f} s"
        # The backlog moves on meanwhile, at most PER_ENDPOINT at a time over both processes.
        wait_for(lambda: _attempts(db, flooded) >= 3 * PER_ENDPOINT, 60, "backlog attempts")
    assert silent.most_open[SILENT] <= PER_ENDPOINT, silent.most_open


def _backlog(db: Conn, shop: Shop, count: int) -> None:
    """``count`` deliveries due for a while already, as after an outage."""
    db.execute(
        "INSERT INTO notifier.deliveries (id, endpoint_id, event_id, merchant_id, payment_id,"
        " event_type, body, next_attempt_at, created_at)"
        " SELECT 'msg_backlog' || n, %s, gen_random_uuid(), %s, 'pay_backlog' || n,"
        " 'payment.succeeded', '{}'::bytea, now() - interval '1 hour' + n * interval '1 ms',"
        " now() - interval '1 hour'"
        " FROM generate_series(1, %s) n",
        (shop.endpoint.id, shop.merchant_id, count),
    )


def _created_at(db: Conn, delivery_id: str) -> float:
    row = db.execute(
        "SELECT extract(epoch FROM created_at) FROM notifier.deliveries WHERE id = %s",
        (delivery_id,),
    ).fetchone()
    assert row is not None
    return float(row[0])


def _attempts(db: Conn, shop: Shop) -> int:
    row = db.execute(
        "SELECT count(*) FROM notifier.attempts a JOIN notifier.deliveries d ON d.id = a.delivery_id"
        " WHERE d.endpoint_id = %s",
        (shop.endpoint.id,),
    ).fetchone()
    return int(row[0]) if row else 0
