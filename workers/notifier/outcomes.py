"""What an attempt decides, written in the attempt's one transaction.

The attempt itself is always recorded. Then: a 2xx delivers; ``410 Gone`` disables the endpoint;
the last attempt of the schedule fails the delivery; anything else schedules the next attempt
(after the endpoint's ``Retry-After`` when it gives one, capped). An endpoint that has failed
every attempt for ``disable_after_s`` is disabled, and its pending deliveries are kept.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from psycopg import AsyncConnection

from workers.core.config import NotifierSettings
from workers.core.sql import load_queries
from workers.notifier import metrics
from workers.notifier.posting import Due, Result

log = logging.getLogger(__name__)
Q = load_queries("workers.notifier")
Conn = AsyncConnection[Any]


async def conclude(conn: Conn, config: NotifierSettings, delivery: Due, result: Result) -> str:
    """Record the attempt and decide what follows; returns the outcome (a metrics label)."""
    await _record(conn, delivery, result)
    if result.ok:
        await conn.execute(Q["endpoint_succeeded"], {"id": delivery.endpoint_id})
        await _settle(conn, "delivery_delivered", delivery, result)
        return "delivered"
    if result.status_code == 410:
        await _disable(conn, delivery, "gone")
        await _settle(conn, "delivery_failed", delivery, result, "endpoint gone (410)")
        return "gone"
    if await _failing_too_long(conn, config, delivery, result):
        await _disable(conn, delivery, "failing")
        await _settle(conn, "delivery_failed", delivery, result)
        return "disabled"
    if delivery.attempts + 1 >= len(config.schedule_s):
        await _settle(conn, "delivery_failed", delivery, result)
        return "failed"
    await _retry(conn, config, delivery, result)
    return "retry"


async def keep_for_disabled_endpoint(conn: Conn, delivery: Due) -> None:
    """A delivery claimed while its endpoint is disabled: kept, not sent."""
    await conn.execute(Q["delivery_endpoint_disabled"], {"id": delivery.id})


async def _record(conn: Conn, delivery: Due, result: Result) -> None:
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


async def _failing_too_long(
    conn: Conn, config: NotifierSettings, delivery: Due, result: Result
) -> bool:
    cursor = await conn.execute(
        Q["endpoint_failed"],
        {
            "id": delivery.endpoint_id,
            "started_at": result.started_at,
            "disable_after_s": config.disable_after_s,
        },
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _retry(conn: Conn, config: NotifierSettings, delivery: Due, result: Result) -> None:
    if result.retry_after_s is not None:
        after = min(result.retry_after_s, config.max_retry_after_s)
    else:
        base = config.schedule_s[delivery.attempts + 1]
        after = base * (1 + random.uniform(-config.jitter, config.jitter))
    await conn.execute(
        Q["delivery_retry"],
        {
            "id": delivery.id,
            "status_code": result.status_code,
            "error": result.summary(),
            "after_s": after,
        },
    )


async def _settle(
    conn: Conn, query: str, delivery: Due, result: Result, error: str | None = None
) -> None:
    error = error or (None if result.ok else result.summary())
    await conn.execute(
        Q[query], {"id": delivery.id, "status_code": result.status_code, "error": error}
    )


async def _disable(conn: Conn, delivery: Due, reason: str) -> None:
    cursor = await conn.execute(
        Q["endpoint_disable"], {"id": delivery.endpoint_id, "reason": reason}
    )
    row = await cursor.fetchone()
    if row is not None and row[0]:
        why = "it answered 410 Gone" if reason == "gone" else "every attempt failed for too long"
        log.warning(
            "endpoint %s disabled: %s; %d pending deliveries kept for `flowpay webhooks retry`",
            delivery.endpoint_id,
            why,
            row[1],
        )
        metrics.endpoint_disabled(reason)
