"""GET /v1/events: every event of a merchant's payments, newest first, filtered by type (with
``*``) and time, paged, each with its payment as it stood just after it; another merchant's
are not there; those older than the retention are gone.

Real roles: the API (its read model records the events), relay, processor, gateway simulator.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers.flow import Flow, flow
from tests.helpers.waiting import wait_for
from workers.api.errors import ApiError
from workers.api.events import like_pattern, parse_event_id
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import admin_url

pytestmark = pytest.mark.timeout(240)


def _get(stack: Flow, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    return local_http.client().get(
        stack.api_url + path,
        params=params,
        headers={"Authorization": f"Bearer {key or stack.api_key}"},
        timeout=30,
    )


def _types_of(stack: Flow, payment_id: str) -> list[str]:
    listed = _get(stack, "/v1/events", limit=100).json()["data"]
    return [e["type"] for e in listed if e["data"]["object"]["id"] == payment_id]


def test_events_list_what_happened_to_the_merchants_payments(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as stack:
        with psycopg.connect(admin_url(settings), autocommit=True) as db:
            other = create_merchant(db, "Other")
        since = int(time.time())
        paid = stack.pay()
        done = stack.wait_for(paid["id"], lambda p: p["status"] == "succeeded")
        flow_of_success = ["payment.succeeded", "payment.processing", "payment.initiated"]
        wait_for(lambda: _types_of(stack, paid["id"]) == flow_of_success, what="its events")
        failed = stack.pay("pm_card_chargeDeclined")
        wait_for(lambda: "payment.failed" in _types_of(stack, failed["id"]), what="its failure")

        newest = _get(stack, "/v1/events", limit=1).json()
        assert newest["has_more"] is True
        (event,) = newest["data"]
        assert event["type"] == "payment.failed"
        assert event["object"] == "event"
        assert event["created"] >= since
        assert _get(stack, f"/v1/events/{event['id']}").json() == event
        # Each event carries its payment as it stood just after it; the last, as GET shows it
        # (but for its client secret, which only the payment's own reads show).
        succeeded = next(
            e for e in _get(stack, "/v1/events", limit=100).json()["data"]
            if e["type"] == "payment.succeeded"
        )  # fmt: skip
        assert succeeded["data"]["object"] == {
            k: v for k, v in done.items() if k != "client_secret"
        }

        # Pages follow each other without a gap or a repeat, oldest last.
        everything = _get(stack, "/v1/events", limit=100).json()["data"]
        paged: list[dict[str, Any]] = []
        after = None
        while True:
            page = _get(
                stack, "/v1/events", limit=2, **({"starting_after": after} if after else {})
            )
            paged += page.json()["data"]
            if not page.json()["has_more"]:
                break
            after = paged[-1]["id"]
        assert paged == everything
        created = [e["created"] for e in everything]
        assert created == sorted(created, reverse=True)

        failures = _get(stack, "/v1/events", type="payment.fail*").json()["data"]
        assert [e["data"]["object"]["id"] for e in failures] == [failed["id"]]
        assert _get(stack, "/v1/events", type="payment.*").json()["data"]
        assert _get(stack, "/v1/events", type="payment").json()["data"] == []
        later = _get(stack, "/v1/events", **{"created[gte]": str(int(time.time()) + 3600)})
        assert later.json()["data"] == []

        # Another merchant sees none of them, and cannot read one by its id.
        assert _get(stack, "/v1/events", key=other.api_key).json()["data"] == []
        theirs = _get(stack, f"/v1/events/{event['id']}", key=other.api_key)
        assert theirs.status_code == 404
        assert _get(stack, "/v1/events/evt_nothing").status_code == 404
        missing = _get(stack, "/v1/events", starting_after="evt_" + "0" * 32)
        assert missing.json()["error"]["param"] == "starting_after"

        # Past the retention, an event is not shown.
        with psycopg.connect(admin_url(settings), autocommit=True) as db:
            db.execute(
                "UPDATE api.events SET created_at = %s WHERE id = %s",
                (datetime.now(UTC) - timedelta(days=31), parse_event_id(event["id"])),
            )
        assert _get(stack, f"/v1/events/{event['id']}").status_code == 404
        shown = [e["id"] for e in _get(stack, "/v1/events", limit=100).json()["data"]]
        assert event["id"] not in shown


def test_a_type_filter_matches_its_wildcards_only() -> None:
    assert like_pattern("payment.*") == "payment.%"
    assert like_pattern("payment_x%") == "payment\\_x\\%"
    assert like_pattern(None) == "%"
    with pytest.raises(ApiError):
        parse_event_id("evt_" + "g" * 32)
