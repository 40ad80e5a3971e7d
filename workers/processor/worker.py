"""`flowpay run-processor`: the consumer (many payments at once) and the reconciler, one process."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from workers.core import observe
from workers.core.async_runner import AsyncConsumerRunner
from workers.core.config import Settings
from workers.core.db import database_url
from workers.core.lifecycle import install_stop_handlers
from workers.core.topics import GROUP_PROCESSOR
from workers.processor import metrics
from workers.processor.gateways import make_gateway
from workers.processor.service import Processor
from workers.processor.store import ProcessorStore

ROLE: Final = "processor"


def serve(settings: Settings) -> None:
    observe.start(settings, ROLE)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    metrics.start(settings)
    asyncio.run(run(settings, stop))


async def run(settings: Settings, stop: threading.Event) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url(settings, "processor"),
        min_size=settings.database.pool_min_size,
        max_size=max(settings.database.pool_max_size, 20),
        open=False,
        name=ROLE,
    )
    await pool.open()
    gateway = make_gateway(settings)
    processor = Processor(settings, ProcessorStore(pool), gateway)
    runner = AsyncConsumerRunner(
        settings,
        group=GROUP_PROCESSOR,
        role=ROLE,
        handler=processor.handle,
        max_in_flight=settings.processor.max_in_flight,
        wants=processor.wants,
    )
    reconciler_stop = asyncio.Event()
    reconciler = asyncio.create_task(processor.reconcile_forever(reconciler_stop))
    try:
        await runner.run(stop)
    finally:
        reconciler_stop.set()
        await reconciler
        await gateway.close()
        await pool.close()
