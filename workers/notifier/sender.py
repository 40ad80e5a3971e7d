"""The delivery loop: claim due webhooks fairly, send them concurrently, record every attempt.

Claims go round the endpoints (``deliveries_claim``), at most ``max_in_flight_per_endpoint``
attempts in flight to one endpoint over every notifier process, so that one endpoint's backlog
or slowness never holds up another's webhooks. Each attempt is bounded (``posting``) and ends
recorded whatever happened (``outcomes``); only a database out of reach leaves it unrecorded,
and then its lease lapses and it goes again, with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import Any

import httpx
import psycopg
from opentelemetry.trace import SpanKind
from psycopg_pool import AsyncConnectionPool

from workers.core.config import NotifierSettings
from workers.core.observe import following_up
from workers.core.sealing import Keyring, SealError
from workers.core.sql import load_queries
from workers.notifier import metrics
from workers.notifier.answers import describe
from workers.notifier.endpoint_secrets import open_secret
from workers.notifier.guard import GuardedTransport
from workers.notifier.outcomes import conclude, keep_for_disabled_endpoint
from workers.notifier.posting import USER_AGENT, Due, Result, post, unsigned
from workers.notifier.wakeup import Wakeup

log = logging.getLogger(__name__)
Q = load_queries("workers.notifier")

__all__ = ["Due", "Sender", "http_client"]


def http_client(config: NotifierSettings) -> httpx.AsyncClient:
    """The client every attempt goes through: checked addresses, no redirects, no proxies."""
    return httpx.AsyncClient(
        transport=GuardedTransport(config, config.max_concurrent),
        timeout=config.attempt_deadline_s,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


class Sender:
    def __init__(
        self,
        config: NotifierSettings,
        pool: AsyncConnectionPool[Any],
        keys: Keyring,
        wakeup: Wakeup | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.keys = keys
        self.wakeup = wakeup or Wakeup()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: threading.Event) -> None:
        self.wakeup.bind()
        async with http_client(self.config) as http:
            while not stop.is_set():
                room = self.config.max_concurrent - len(self._tasks)
                try:
                    started = await self.send_due(http, room) if room > 0 else 0
                except psycopg.OperationalError as exc:
                    # The database restarting or out of reach: claim again once it is back.
                    log.warning("cannot claim due deliveries: %s", exc)
                    started = 0
                if room <= 0 or started < room:
                    # Until an attempt ends (room, and maybe its endpoint's turn, again), the
                    # intake records deliveries, or the poll comes round for retries now due.
                    await self.wakeup.wait(self.config.poll_interval_s)
                else:
                    await asyncio.sleep(0)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.config.attempt_deadline_s + 1)

    async def send_due(self, http: httpx.AsyncClient, limit: int) -> int:
        """Start sending up to ``limit`` due deliveries; returns how many were started."""
        params = {
            "limit": limit,
            "lease_s": self.config.lease_s,
            "per_endpoint": self.config.max_in_flight_per_endpoint,
        }
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(Q["deliveries_claim_lock"])
            cursor = await conn.execute(Q["deliveries_claim"], params)
            due = [self._due(row) for row in await cursor.fetchall()]
        for delivery in due:
            task = asyncio.create_task(self.attempt(http, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._ended)
        return len(due)

    def _due(self, row: tuple[Any, ...]) -> Due:
        delivery_id, endpoint_id, url, key_id, sealed, plain, *rest = row
        status, body, attempts, payment_id, event_id, correlation_id, traceparent = rest
        secret, unavailable = "", None
        try:
            secret = open_secret(self.keys, endpoint_id, key_id, sealed, plain)
        except SealError as exc:  # recorded as the attempt's failure; it goes again later
            unavailable = f"secret_unavailable: {exc}"
        return Due(
            delivery_id, endpoint_id, url, secret, status, bytes(body), attempts, payment_id,
            event_id, correlation_id, traceparent, secret_error=unavailable,
        )  # fmt: skip

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.wakeup.set()

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
                log.warning("webhook attempt not recorded (%s); it will be retried", exc)
            except Exception:  # a task must not end with an exception nobody retrieves
                log.exception("webhook attempt not recorded; it will be retried")

    async def deliver(self, http: httpx.AsyncClient, delivery: Due) -> None:
        if delivery.endpoint_status != "enabled":
            async with self.pool.connection() as conn:
                await keep_for_disabled_endpoint(conn, delivery)
            return
        if delivery.secret_error is not None:
            result = unsigned(delivery.secret_error)
        else:
            result = await post(http, delivery, self.config.attempt_deadline_s)
        outcome = await self.record(delivery, result)
        metrics.attempted(outcome, delivery.attempts + 1)
        log.info(
            "webhook attempt %d of %s to endpoint %s: %s; %s",
            delivery.attempts + 1,
            delivery.id,
            delivery.endpoint_id,
            result.summary(),
            outcome,
        )

    async def record(self, delivery: Due, result: Result) -> str:
        """The attempt and what it decides, in one transaction; recorded whatever goes wrong."""
        try:
            return await self._commit(delivery, result)
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            # Something of the answer the database would not take, or a fault of ours: the
            # attempt is recorded all the same, without the answer's body, naming the fault.
            log.warning("webhook attempt recorded without its answer: %s", describe(exc))
            failed = dataclasses.replace(result, error=describe(exc), head=None)
            return await self._commit(delivery, failed)

    async def _commit(self, delivery: Due, result: Result) -> str:
        async with self.pool.connection() as conn, conn.transaction():
            return await conclude(conn, self.config, delivery, result)
