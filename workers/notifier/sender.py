"""The delivery loop: send due webhooks concurrently, sign every attempt, retry on a schedule.

Success is a 2xx within the timeout. Anything else is retried after the next delay of the
schedule (with jitter), or after the endpoint's ``Retry-After`` when it gives one (capped);
``410 Gone`` disables the endpoint. After the last attempt a delivery is ``failed`` and stays
inspectable. A sender that dies mid-send loses nothing: its lease lapses and the delivery goes
again, with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx
import psycopg
from opentelemetry.trace import SpanKind
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from workers.core.config import NotifierSettings
from workers.core.observe import following_up
from workers.core.sql import load_queries
from workers.core.webhook_urls import InvalidWebhookUrl
from workers.notifier import metrics, signing
from workers.notifier.guard import GuardedTransport
from workers.notifier.wakeup import Wakeup

log = logging.getLogger(__name__)
Q = load_queries("workers.notifier")
USER_AGENT: Final = "FlowPay-Webhooks/1"
RESPONSE_HEAD: Final = 200
Conn = AsyncConnection[Any]


@dataclass(frozen=True)
class Due:
    id: str
    endpoint_id: str
    url: str
    secret: str
    endpoint_status: str
    body: bytes
    attempts: int
    payment_id: str | None = None
    event_id: str | None = None
    correlation_id: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True)
class Result:
    status_code: int | None
    error: str | None
    retry_after_s: float | None
    started_at: datetime
    duration_ms: int
    head: str | None


class Sender:
    def __init__(
        self,
        config: NotifierSettings,
        pool: AsyncConnectionPool[Any],
        wakeup: Wakeup | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.wakeup = wakeup or Wakeup()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: threading.Event) -> None:
        self.wakeup.bind()
        async with httpx.AsyncClient(
            transport=GuardedTransport(self.config, self.config.max_concurrent),
            timeout=self.config.timeout_s,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        ) as http:
            while not stop.is_set():
                room = self.config.max_concurrent - len(self._tasks)
                try:
                    started = await self.send_due(http, room) if room > 0 else 0
                except psycopg.OperationalError as exc:
                    # The database restarting or out of reach: claim again once it is back.
                    log.warning("cannot claim due deliveries: %s", exc)
                    started = 0
                if started < room:
                    await self.wakeup.wait(self.config.poll_interval_s)
                else:
                    await asyncio.sleep(0)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.config.timeout_s)

    async def send_due(self, http: httpx.AsyncClient, limit: int) -> int:
        """Start sending up to ``limit`` due deliveries; returns how many were started."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                Q["deliveries_claim"], {"limit": limit, "lease_s": self.config.timeout_s + 5}
            )
            due = [
                Due(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], r[8], r[9], r[10])
                for r in await cursor.fetchall()
            ]
        for delivery in due:
            task = asyncio.create_task(self.attempt(http, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(due)

    async def attempt(self, http: httpx.AsyncClient, delivery: Due) -> None:
        """``deliver``, with the event's ids on its log lines and a span in the event's trace."""
        with following_up(
            f"webhook attempt {delivery.attempts + 1}",
            delivery.traceparent,
            SpanKind.CLIENT,
            payment_id=delivery.payment_id,
            event_id=delivery.event_id,
            correlation_id=delivery.correlation_id,
        ):
            try:
                await self.deliver(http, delivery)
            except psycopg.OperationalError as exc:  # the pool's timeouts and closing included
                # Nothing is lost: the lease lapses and the delivery goes again, same webhook-id.
                log.warning("webhook attempt not recorded (%s); it will be retried", exc)

    async def deliver(self, http: httpx.AsyncClient, delivery: Due) -> None:
        if delivery.endpoint_status != "enabled":
            async with self.pool.connection() as conn:
                await self._settle(conn, "delivery_failed", delivery, None, "endpoint disabled")
            return
        result = await self._post(http, delivery)
        # The attempt and what it decides commit together: one commit per attempt.
        async with self.pool.connection() as conn, conn.transaction():
            outcome = await self._conclude(conn, delivery, result)
        metrics.attempted(outcome, delivery.attempts + 1)

    async def _conclude(self, conn: Conn, delivery: Due, result: Result) -> str:
        await self._record(conn, delivery, result)
        if result.status_code is not None and 200 <= result.status_code < 300:
            await self._settle(conn, "delivery_delivered", delivery, result.status_code, None)
            return "delivered"
        if result.status_code == 410:
            await self._disable(conn, delivery)
            return "gone"
        if delivery.attempts + 1 >= len(self.config.schedule_s):
            await self._settle(conn, "delivery_failed", delivery, result.status_code, result.error)
            return "failed"
        await self._retry(conn, delivery, result)
        return "retry"

    async def _post(self, http: httpx.AsyncClient, delivery: Due) -> Result:
        headers = signing.headers(delivery.secret, delivery.id, delivery.body)
        headers["Content-Type"] = "application/json"
        started_at, clock = datetime.now(UTC), time.perf_counter()
        status, error, retry_after, head = None, None, None, None
        try:
            response = await http.post(delivery.url, content=delivery.body, headers=headers)
            status, head = response.status_code, response.text[:RESPONSE_HEAD]
            retry_after = _retry_after_s(response.headers.get("retry-after"))
        except httpx.TimeoutException:
            error = "timeout"
        except (httpx.HTTPError, InvalidWebhookUrl) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = int((time.perf_counter() - clock) * 1000)
        return Result(
            status,
            error or (None if status else "no response"),
            retry_after,
            started_at,
            duration_ms,
            head,
        )

    async def _record(self, conn: Conn, delivery: Due, result: Result) -> None:
        await conn.execute(
            Q["attempt_insert"],
            {
                "delivery_id": delivery.id,
                "attempt": delivery.attempts + 1,
                "started_at": result.started_at,
                "duration_ms": result.duration_ms,
                "status_code": result.status_code,
                "error": result.error,
                "response_head": result.head,
            },
        )

    async def _retry(self, conn: Conn, delivery: Due, result: Result) -> None:
        if result.retry_after_s is not None:
            after = min(result.retry_after_s, self.config.max_retry_after_s)
        else:
            base = self.config.schedule_s[delivery.attempts + 1]
            after = base * (1 + random.uniform(-self.config.jitter, self.config.jitter))
        error = result.error or f"HTTP {result.status_code}"
        await conn.execute(
            Q["delivery_retry"],
            {
                "id": delivery.id,
                "status_code": result.status_code,
                "error": error,
                "after_s": after,
            },
        )

    async def _settle(
        self, conn: Conn, query: str, delivery: Due, status_code: int | None, error: str | None
    ) -> None:
        await conn.execute(
            Q[query], {"id": delivery.id, "status_code": status_code, "error": error}
        )

    async def _disable(self, conn: Conn, delivery: Due) -> None:
        log.warning("endpoint %s answered 410 Gone: disabling it", delivery.endpoint_id)
        await conn.execute(Q["endpoint_disable"], {"id": delivery.endpoint_id})
        await conn.execute(
            Q["delivery_failed"],
            {"id": delivery.id, "status_code": 410, "error": "endpoint gone (410)"},
        )


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
