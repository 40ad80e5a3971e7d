"""`flowpay run-processor`: the processor's handlers on the consumer engine, and the reconciler,
on one event loop in one process."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from workers.core import observe
from workers.core.config import Settings
from workers.core.consuming import IGNORE, Engine, Routes, Subscriber, register
from workers.core.db import database_url
from workers.core.events import EventType
from workers.core.lifecycle import install_stop_handlers
from workers.core.topics import GROUP_PROCESSOR
from workers.processor import metrics
from workers.processor.charging import Charging
from workers.processor.gateways import make_gateway
from workers.processor.reconciler import Reconciler
from workers.processor.refunds import Refunds
from workers.processor.service import ROLE, Processor
from workers.processor.settlements import Settler
from workers.processor.store import ProcessorStore

# Poll batches in hand at once. Each is charged at once (up to processor.max_in_flight gateway
# calls over all of them), and settles as its answers come back; more batches at once keep the
# gateway busy while one waits for its slowest charge (a timeout, retried, is seconds).
BATCHES_IN_FLIGHT: Final = 16

ROUTES: Final = register(
    Routes[Processor](
        ROLE,
        {
            EventType.INITIATED: Processor.start,
            EventType.REFUND_REQUESTED: Processor.refund,
            # The processor emits these itself: they come back and are passed over, undecoded.
            EventType.PROCESSING: IGNORE,
            EventType.SUCCEEDED: IGNORE,
            EventType.FAILED: IGNORE,
            EventType.REFUNDED: IGNORE,
            EventType.REFUND_FAILED: IGNORE,
            EventType.CHARGE_REVERSED: IGNORE,
            # A gateway's own report (its webhook, through the API): the ledger records it;
            # the processor does not act on it yet.
            EventType.GATEWAY_REPORTED: IGNORE,
        },
    )
)


def subscriber(processor: Processor) -> Subscriber[Processor]:
    return Subscriber(
        GROUP_PROCESSOR,
        ROLE,
        ROUTES,
        processor,
        principal="processor",
        max_in_flight=BATCHES_IN_FLIGHT,
        spans=False,  # each event's span is the handler's: its charge and events hang under it
    )


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
    store = ProcessorStore(pool)
    charging = Charging(settings.processor, store, gateway, Settler(store))
    refunds = Refunds(settings, store, gateway)
    reconciler_stop = asyncio.Event()
    reconciler = asyncio.create_task(Reconciler(charging, refunds).run(reconciler_stop))
    try:
        await Engine(settings, subscriber(Processor(charging, refunds))).run(stop)
    finally:
        reconciler_stop.set()
        await reconciler
        await gateway.close()
        await pool.close()
