"""GET /v1/payments/<id>/events against a running serve-api and the real pipeline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import flowpay
from tests.helpers.flow import Flow, flow, paused
from tests.helpers.sse import Recording, record
from workers.api.client import ApiClient
from workers.api.merchants import create_merchant, list_keys, revoke_key
from workers.core.config import Settings
from workers.core.db import admin_url

FAST_HEARTBEAT = {"FLOWPAY_API__STREAM_HEARTBEAT_S": "0.2"}
KEEP_ALIVE = ": keep-alive"


@dataclass
class Reader(Recording):
    """One connection to a payment's event stream, recording every line and event."""

    f: Flow
    payment_id: str
    last_event_id: str | None = None
    api_key: str | None = None

    @property
    def payments(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events]

    @property
    def ids_and_statuses(self) -> list[tuple[str | None, str]]:
        return [(e.id, p["status"]) for e, p in zip(self.events, self.payments, strict=True)]

    async def run(self, stop_after: int | None = None) -> Reader:
        """Read until the server ends the stream, or hang up after ``stop_after`` events."""
        headers = {"Authorization": f"Bearer {self.api_key or self.f.api_key}"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        url = f"/v1/payments/{self.payment_id}/events"
        await record(self, self.f.api_url, url, headers, stop_after=stop_after)
        return self


def read(reader: Reader, stop_after: int | None = None, timeout_s: float = 60) -> Reader:
    async def bounded() -> Reader:
        async with asyncio.timeout(timeout_s):
            return await reader.run(stop_after)

    return asyncio.run(bounded())


async def until(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


LISTENERS = (
    "FROM pg_stat_activity WHERE datname = current_database()"
    " AND query LIKE 'LISTEN flowpay_payment_changes%'"
)


def listeners(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) " + LISTENERS).fetchone()
    assert row is not None
    return int(row[0])


def kill_listeners(conn: psycopg.Connection[Any]) -> int:
    return len(conn.execute("SELECT pg_terminate_backend(pid) " + LISTENERS).fetchall())


def test_stream_delivers_each_status_in_order_with_keep_alives_then_ends(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path, extra_env=FAST_HEARTBEAT) as f:

        async def scenario() -> Reader:
            # The payment stays initiated while the relay is stopped.
            with paused(f.processes["outbox"]):
                reader = Reader(f, f.pay()["id"])
                task = asyncio.create_task(reader.run())
                await until(
                    lambda: len(reader.events) == 1 and reader.lines.count(KEEP_ALIVE) >= 2,
                    "the current state, then keep-alives on the idle stream",
                )
                assert reader.payments == [f.payment(reader.payment_id)]
            async with asyncio.timeout(60):
                return await task

        reader = asyncio.run(scenario())
        assert reader.ended
        assert reader.ids_and_statuses == [
            ("1", "initiated"),
            ("2", "processing"),
            ("3", "succeeded"),
        ]
        assert reader.payments[-1] == f.payment(reader.payment_id)  # the same JSON as GET


def test_resume_with_last_event_id_gets_only_what_was_missed(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as f:
        with paused(f.processes["outbox"]):
            payment = f.pay()
            first = read(Reader(f, payment["id"]), stop_after=1)  # then hangs up
        assert first.ids_and_statuses == [("1", "initiated")]
        f.wait_for(payment["id"], lambda p: p["status"] == "succeeded")

        resumed = read(Reader(f, payment["id"], last_event_id="1"))
        assert resumed.ended
        assert resumed.ids_and_statuses == [("2", "processing"), ("3", "succeeded")]

        # Having seen the final change, a client is told there is nothing more (no reconnect).
        assert read(Reader(f, payment["id"], last_event_id="3")).status == 204
        # From 0, the whole history; without the header, only the current state.
        assert [
            s for _, s in read(Reader(f, payment["id"], last_event_id="0")).ids_and_statuses
        ] == [
            "initiated",
            "processing",
            "succeeded",
        ]
        assert read(Reader(f, payment["id"])).ids_and_statuses == [("3", "succeeded")]


def test_a_failing_payment_ends_at_failed(settings: Settings, tmp_path: Path) -> None:
    with flow(settings, tmp_path) as f:
        payment = f.pay("pm_card_chargeDeclined")
        reader = read(Reader(f, payment["id"]))
        assert reader.ended
        last = reader.payments[-1]
        assert (last["status"], last["failure_reason"]) == ("failed", "card_declined")
        statuses = [s for _, s in reader.ids_and_statuses]
        assert statuses == ["initiated", "processing", "failed"][-len(statuses) :]
        ids = [int(i or 0) for i, _ in reader.ids_and_statuses]
        assert ids == list(range(4 - len(ids), 4))


def test_only_the_merchants_own_payments_and_valid_requests_stream(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as f:
        payment = f.pay()
        with psycopg.connect(admin_url(settings), autocommit=True) as conn:
            other = create_merchant(conn, "Other shop")
        cases = [
            (Reader(f, payment["id"], api_key=other.api_key), 404, "resource_missing"),
            (Reader(f, "pay_doesnotexist"), 404, "resource_missing"),
            (Reader(f, payment["id"], api_key="sk_live_wrong"), 401, "api_key_invalid"),
            (Reader(f, payment["id"], last_event_id="99"), 409, "last_event_id_unknown"),
            (Reader(f, payment["id"], last_event_id="-1"), 400, "last_event_id_invalid"),
        ]
        for reader, status, code in cases:
            read(reader)
            assert (reader.status, json.loads(reader.body)["error"]["code"]) == (status, code)
            assert not reader.events


def test_a_stream_ends_once_its_key_is_revoked(settings: Settings, tmp_path: Path) -> None:
    uncached = {**FAST_HEARTBEAT, "FLOWPAY_API__KEY_CACHE_S": "0"}
    with flow(settings, tmp_path, extra_env=uncached) as f, paused(f.processes["outbox"]):
        # The payment stays initiated: only the revocation can end its stream.
        reader = Reader(f, f.pay()["id"])

        async def scenario() -> Reader:
            task = asyncio.create_task(reader.run())
            await until(lambda: len(reader.events) == 1, "the current state")
            with psycopg.connect(admin_url(settings), autocommit=True) as conn:
                [key] = list_keys(conn, f.merchant_id)
                revoke_key(conn, key.id)
            async with asyncio.timeout(30):
                return await task

        asyncio.run(scenario())
        assert reader.ended
        assert reader.ids_and_statuses == [("1", "initiated")]
        # Resuming is refused like any request with that key.
        assert read(Reader(f, reader.payment_id, last_event_id="1")).status == 401


def test_streams_follow_changes_applied_by_any_server_process(
    settings: Settings, tmp_path: Path
) -> None:
    """Two server processes split the read model's partitions: a change may be written by the
    other process than the one holding the stream. Each process has one LISTEN connection,
    however many streams it serves."""
    # Keep-alives (which also look again) out of reach: only a notification can wake a stream.
    env = {"FLOWPAY_API__WORKERS": "2", "FLOWPAY_API__STREAM_HEARTBEAT_S": "300"}
    with flow(settings, tmp_path, extra_env=env) as f:

        async def scenario() -> list[Reader]:
            with paused(f.processes["outbox"]):
                readers = [Reader(f, f.pay()["id"]) for _ in range(6)]
                tasks = [asyncio.create_task(r.run()) for r in readers]
                await until(lambda: all(r.events for r in readers), "every stream's first event")
                # A process may still be starting when the other already serves every stream.
                with psycopg.connect(admin_url(settings), autocommit=True) as conn:
                    counts: list[int] = []

                    def both_listen() -> bool:
                        counts.append(listeners(conn))
                        return counts[-1] == 2

                    await until(both_listen, "one listener in each server process")
                assert max(counts) == 2, counts  # never one listener per stream
            async with asyncio.timeout(60):
                return await asyncio.gather(*tasks)

        for reader in asyncio.run(scenario()):
            assert reader.ended
            assert reader.ids_and_statuses == [
                ("1", "initiated"),
                ("2", "processing"),
                ("3", "succeeded"),
            ]


def test_a_change_made_while_the_listener_reconnects_is_not_missed(
    settings: Settings, tmp_path: Path
) -> None:
    """Once it listens again, the feed wakes every stream (keep-alives, which also look again,
    are out of reach: nothing else could)."""
    # One server process, so that the one listener killed is the stream's.
    env = {"FLOWPAY_API__WORKERS": "1", "FLOWPAY_API__STREAM_HEARTBEAT_S": "300"}
    with flow(settings, tmp_path, extra_env=env) as f:

        async def scenario() -> Reader:
            with paused(f.processes["outbox"]):
                reader = Reader(f, f.pay()["id"])
                task = asyncio.create_task(reader.run())
                await until(lambda: len(reader.events) == 1, "the first event")
                with psycopg.connect(admin_url(settings), autocommit=True) as conn:
                    assert kill_listeners(conn) == 1
                    # What the read model does on payment.processing, with nobody listening.
                    conn.execute(
                        "UPDATE api.payments SET status = 'processing', updated_at = now()"
                        " WHERE id = %s",
                        (reader.payment_id,),
                    )
                await until(lambda: len(reader.events) == 2, "the change made meanwhile")
            async with asyncio.timeout(60):
                return await task

        reader = asyncio.run(scenario())
        assert reader.ids_and_statuses == [
            ("1", "initiated"),
            ("2", "processing"),
            ("3", "succeeded"),
        ]
        with psycopg.connect(admin_url(settings)) as conn:
            assert listeners(conn) == 1  # it came back


def test_follow_resumes_a_stream_cut_by_a_server_crash(settings: Settings, tmp_path: Path) -> None:
    with flow(settings, tmp_path) as f:
        statuses: list[str] = []

        async def scenario() -> None:
            async with ApiClient(f.api_url, f.api_key) as client:
                with paused(f.processes["outbox"]):
                    payment_id = f.pay()["id"]

                    async def follow() -> None:
                        async for changed in client.follow(payment_id, retry_s=0.1):
                            statuses.append(changed["status"])

                    task = asyncio.create_task(follow())
                    await until(lambda: statuses == ["initiated"], "the first event")
                    f.processes["api"].kill()  # the stream is cut mid-way
                    f.processes["api"].wait(10)
                    port = f.api_url.rsplit(":", 1)[1]
                    f.start("api", ["serve-api", "--port", port], f.api_url + "/healthz")
                async with asyncio.timeout(60):
                    await task

        asyncio.run(scenario())
        assert statuses == ["initiated", "processing", "succeeded"]


def test_pay_wait_reports_each_final_status(settings: Settings, tmp_path: Path) -> None:
    with flow(settings, tmp_path) as f:
        common = ["--url", f.api_url, "--api-key", f.api_key, "--wait", "--json"]
        many = flowpay(
            "pay", "--amount", "1999", "--count", "3", "--concurrency", "3", *common, env=f.env
        )
        assert many.returncode == 0, many.stderr
        assert json.loads(many.stdout)["final_statuses"] == {"succeeded": 3}

        declined = ["--payment-method", "pm_card_chargeDeclined"]
        one = flowpay("pay", "--amount", "500", *declined, *common, env=f.env)
        assert one.returncode == 0, one.stderr
        shown = json.loads(one.stdout)
        assert (shown["status"], shown["failure_reason"]) == ("failed", "card_declined")
        assert shown == f.payment(shown["id"])
