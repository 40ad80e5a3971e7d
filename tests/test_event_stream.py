"""GET /v1/events/stream: every event of the merchant's payments as it happens, as Server-Sent
Events, in commit order, resumable with Last-Event-ID, filtered by type; the key's cap applies.

Real roles: the API (its read model records the events), relay, processor, gateway simulator.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers.flow import Flow, flow
from tests.helpers.sse import Recording, record
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import admin_url

pytestmark = pytest.mark.timeout(240)
FAST_HEARTBEAT = {"FLOWPAY_API__STREAM_HEARTBEAT_S": "0.2"}
KEEP_ALIVE = ": keep-alive"
STREAM = "/v1/events/stream"


@dataclass
class Reader(Recording):
    """One connection to the merchant's event stream, recording every line and event."""

    f: Flow
    api_key: str | None = None
    last_event_id: str | None = None
    type_: str | None = None

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events]

    def of(self, payment_id: str) -> list[dict[str, Any]]:
        return [e for e in self.objects if e["data"]["object"]["id"] == payment_id]

    async def run(self, stop_after: int | None = None) -> Reader:
        headers = {"Authorization": f"Bearer {self.api_key or self.f.api_key}"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        params = {"type": self.type_} if self.type_ is not None else {}
        await record(self, self.f.api_url, STREAM, headers, params, stop_after)
        return self


async def until(check: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


def refused(reader: Reader) -> tuple[int, str]:
    asyncio.run(asyncio.wait_for(reader.run(), 30))
    assert not reader.events
    return reader.status, json.loads(reader.body)["error"]["code"]


def test_every_event_of_the_merchants_payments_as_it_happens_then_resumed(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path, extra_env=FAST_HEARTBEAT) as f:
        with psycopg.connect(admin_url(settings), autocommit=True) as db:
            other = create_merchant(db, "Other")
        every, succeeded, others = (
            Reader(f),
            Reader(f, type_="payment.s*"),
            Reader(f, other.api_key),
        )

        async def scenario() -> str:
            tasks = [asyncio.create_task(r.run()) for r in (every, succeeded, others)]
            await until(lambda: all(KEEP_ALIVE in r.lines for r in (every, succeeded, others)),
                        "every stream open")  # fmt: skip
            paid = str(f.pay()["id"])
            await until(lambda: len(every.of(paid)) == 3, "the payment's three events")
            await until(lambda: len(succeeded.of(paid)) == 1, "its success, filtered")
            for task in tasks:
                task.cancel()
            return paid

        paid = asyncio.run(scenario())
        assert [e["type"] for e in every.objects] == [
            "payment.initiated", "payment.processing", "payment.succeeded",
        ]  # fmt: skip
        assert [e["type"] for e in succeeded.objects] == ["payment.succeeded"]
        assert others.events == []  # another merchant's stream saw none of it
        headers = {"Authorization": f"Bearer {f.api_key}"}
        for frame, event in zip(every.events, every.objects, strict=True):
            assert frame.id == event["id"]
            got = local_http.client().get(f"{f.api_url}/v1/events/{event['id']}", headers=headers)
            assert got.json() == event  # each frame is the event as GET shows it
        # The last carries the payment as GET shows it, but for its client secret, which only
        # the payment's own reads show.
        shown = {k: v for k, v in f.payment(paid).items() if k != "client_secret"}
        assert every.objects[-1]["data"]["object"] == shown

        # Resumed after the first: the rest, in order; after the last, nothing yet.
        resumed = Reader(f, last_event_id=every.events[0].id)
        asyncio.run(asyncio.wait_for(resumed.run(stop_after=2), 60))
        assert [e["id"] for e in resumed.objects] == [e["id"] for e in every.objects[1:]]


def test_an_event_committed_late_is_not_skipped(settings: Settings, tmp_path: Path) -> None:
    """Two transactions record events: the first to begin commits last. A stream that went by
    commit time alone would have moved past the first's event when the second's came."""
    with flow(settings, tmp_path, extra_env=FAST_HEARTBEAT) as f:
        reader = Reader(f)
        first, second = uuid.uuid4(), uuid.uuid4()

        async def scenario() -> None:
            task = asyncio.create_task(reader.run(stop_after=2))
            await until(lambda: KEEP_ALIVE in reader.lines, "the stream open")
            with (
                psycopg.connect(admin_url(settings)) as early,
                psycopg.connect(admin_url(settings), autocommit=True) as late,
            ):
                _record(early, first, f.merchant_id)  # its transaction stays open
                _record(late, second, f.merchant_id)
                seen = reader.lines.count(KEEP_ALIVE)
                # Woken by the second's commit, the stream looked and kept looking.
                await until(lambda: reader.lines.count(KEEP_ALIVE) >= seen + 2, "more looks")
                assert reader.events == []  # the second waits for the first
                early.commit()
            async with asyncio.timeout(30):
                await task

        asyncio.run(scenario())
        assert [e.id for e in reader.events] == [f"evt_{first.hex}", f"evt_{second.hex}"]


def _record(conn: psycopg.Connection[Any], event_id: uuid.UUID, merchant_id: str) -> None:
    conn.execute(
        "INSERT INTO api.events (id, merchant_id, payment_id, type, created_at, data)"
        " VALUES (%s, %s, 'pay_x', 'payment.initiated', now(), %s)",
        (event_id, merchant_id, Jsonb({"id": "pay_x", "object": "payment"})),
    )


def test_bad_requests_and_the_keys_cap_on_open_streams(settings: Settings, tmp_path: Path) -> None:
    cap = {**FAST_HEARTBEAT, "FLOWPAY_API__MAX_STREAMS_PER_KEY": "1"}
    with flow(settings, tmp_path, extra_env=cap) as f:
        unknown = f"evt_{uuid.uuid4().hex}"
        assert refused(Reader(f, last_event_id="3")) == (400, "last_event_id_invalid")
        assert refused(Reader(f, last_event_id=unknown)) == (409, "last_event_id_unknown")
        assert refused(Reader(f, type_="Payment%")) == (422, "parameter_invalid")
        assert refused(Reader(f, api_key="sk_live_wrong")) == (401, "api_key_invalid")

        async def scenario() -> tuple[int, str]:
            open_ = Reader(f)
            task = asyncio.create_task(open_.run())
            await until(lambda: KEEP_ALIVE in open_.lines, "one stream open")
            second = Reader(f)
            await second.run()
            task.cancel()
            return second.status, json.loads(second.body)["error"]["code"]

        assert asyncio.run(scenario()) == (429, "too_many_streams")
