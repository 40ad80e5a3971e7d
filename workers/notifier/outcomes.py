"""What attempts decide, written with them: many attempts, one transaction.

Each attempt itself is always recorded. Then: a 2xx delivers; ``410 Gone`` disables the endpoint;
the last attempt of the schedule fails the delivery; anything else schedules the next attempt
(after the endpoint's ``Retry-After`` when it gives one, capped). An endpoint that has failed
every attempt for ``disable_after_s`` is disabled, and its pending deliveries are kept.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from workers.core.config import NotifierSettings
from workers.core.sql import load_queries
from workers.notifier import metrics
from workers.notifier.posting import Due, Result

log = logging.getLogger(__name__)
Q = load_queries("workers.notifier")
Conn = AsyncConnection[Any]


Finished = tuple[Due, Result]


async def conclude(conn: Conn, config: NotifierSettings, finished: Sequence[Finished]) -> list[str]:
    """Record each attempt and decide what follows it, set-based for the many that delivered;
    returns each one's outcome (a metrics label), in order."""
    await _record(conn, finished)
    delivered = [(d, r) for d, r in finished if r.ok]
    if delivered:
        ids = [d.id for d, _ in delivered]
        codes = [r.status_code for _, r in delivered]
        await conn.execute(Q["deliveries_delivered"], {"ids": ids, "status_codes": codes})
        endpoints = sorted({d.endpoint_id for d, _ in delivered})
        await conn.execute(Q["endpoints_succeeded"], {"ids": endpoints})
    return [
        "delivered" if result.ok else await _after_failure(conn, config, delivery, result)
        for delivery, result in finished
    ]


async def _after_failure(
    conn: Conn, config: NotifierSettings, delivery: Due, result: Result
) -> str:
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


async def _record(conn: Conn, finished: Sequence[Finished]) -> None:
    await conn.execute(
        Q["attempts_insert"],
        {
            "delivery_ids": [d.id for d, _ in finished],
            "attempts": [d.attempts + 1 for d, _ in finished],
            "started_at": [r.started_at for _, r in finished],
            "durations": [r.duration_ms for _, r in finished],
            "status_codes": [r.status_code for _, r in finished],
            "errors": [r.error for _, r in finished],
            "heads": [r.head for _, r in finished],
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
