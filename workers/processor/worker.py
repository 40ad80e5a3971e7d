"""`flowpay run-processor`: the processor's two subscribers on the consumer engine (the
orchestrator's commands, which say what to charge, refund, authorize, capture, void and pay
out; and the payment events, of which only the gateway's reports concern it) and the
reconciler, on one event loop in one process."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from workers.core import commands, heap, observe
from workers.core.commands import CommandType
from workers.core.config import Settings
from workers.core.consuming import IGNORE, Engine, Routes, Subscriber, register
from workers.core.db import database_url
from workers.core.events import EventType
from workers.core.lifecycle import install_stop_handlers
from workers.core.loop import run_async
from workers.core.topics import GROUP_PROCESSOR, GROUP_PROCESSOR_COMMANDS, topics
from workers.processor import metrics
from workers.processor.captures import Captures
from workers.processor.charging import Charging, gather_all
from workers.processor.gateways import make_gateway
from workers.processor.reconciler import Reconciler
from workers.processor.refunds import Refunds
from workers.processor.reports import Reports
from workers.processor.service import ROLE, Processor
from workers.processor.settlements import Settler
from workers.processor.store import ProcessorStore
from workers.processor.waits import Waits

# Poll batches in hand at once. Each is charged at once (up to processor.max_in_flight gateway
# calls over all of them), and settles as its answers come back; more batches at once keep the
# gateway busy while one waits for its slowest charge (a timeout, retried, is seconds).
BATCHES_IN_FLIGHT: Final = 16

ROUTES: Final = register(
    Routes[Processor](
        ROLE,
        {
            # The orchestrator's sagas start here; the processor acts on their commands.
            EventType.INITIATED: IGNORE,
            EventType.REFUND_REQUESTED: IGNORE,
            # The processor emits these itself: they come back and are passed over, undecoded.
            EventType.PROCESSING: IGNORE,
            EventType.SUCCEEDED: IGNORE,
            EventType.FAILED: IGNORE,
            EventType.REFUNDED: IGNORE,
            EventType.REFUND_FAILED: IGNORE,
            EventType.CHARGE_REVERSED: IGNORE,
            # A gateway's own report (its webhook, through the API): settles a payment that
            # waits on the gateway.
            EventType.GATEWAY_REPORTED: Processor.reported,
            # Its own, as the others: the wait's end is the reconciler's (waits).
            EventType.REQUIRES_ACTION: IGNORE,
            # A payout is the orchestrator's to drive: the processor executes its command.
            EventType.PAYOUT_REQUESTED: IGNORE,
            EventType.PAYOUT_PAID: IGNORE,
            EventType.PAYOUT_FAILED: IGNORE,
            # Manual capture: the processor's work comes as the orchestrator's commands
            # (COMMAND_ROUTES); these events are the API's and its own answers.
            EventType.AUTHORIZATION_REQUESTED: IGNORE,
            EventType.REQUIRES_CAPTURE: IGNORE,
            EventType.CAPTURE_REQUESTED: IGNORE,
            EventType.CANCEL_REQUESTED: IGNORE,
            EventType.CANCELED: IGNORE,
        },
    )
)


COMMAND_ROUTES: Final = register(
    Routes[Processor](
        f"{ROLE}-commands",
        {
            CommandType.CHARGE: Processor.charge,
            CommandType.REFUND: Processor.refund,
            CommandType.AUTHORIZE: Processor.execute,
            CommandType.CAPTURE: Processor.execute,
            CommandType.VOID: Processor.execute,
            CommandType.PAYOUT: Processor.execute,
        },
        CommandType,
    )
)


def command_subscriber(settings: Settings, processor: Processor) -> Subscriber[Processor]:
    return Subscriber(
        GROUP_PROCESSOR_COMMANDS,
        ROLE,
        COMMAND_ROUTES,
        processor,
        principal="processor",
        topics=(topics(settings).commands,),
        max_in_flight=BATCHES_IN_FLIGHT,
        decode=commands.decode,
        spans=False,  # each command's span is the handler's: its gateway calls hang under it
    )


def subscriber(processor: Processor) -> Subscriber[Processor]:
    return Subscriber(
        GROUP_PROCESSOR,
        ROLE,
        ROUTES,
        processor,
        principal="processor",
        max_in_flight=BATCHES_IN_FLIGHT,
        spans=False,  # each report's span is the handler's: what it settles hangs under it
    )


def serve(settings: Settings) -> None:
    observe.start(settings, ROLE)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    metrics.start(settings)
    heap.settle()
    run_async(run(settings, stop))


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
    waits = Waits(charging, gateway)
    reconciler_stop = asyncio.Event()
    reconciler = asyncio.create_task(Reconciler(charging, refunds, waits).run(reconciler_stop))
    try:
        processor = Processor(charging, refunds, Reports(charging), Captures(store, gateway))
        engines = (
            Engine(settings, subscriber(processor)),
            Engine(settings, command_subscriber(settings, processor)),
        )
        await gather_all(_until_one_fails(engine, stop) for engine in engines)
    finally:
        reconciler_stop.set()
        await reconciler
        await gateway.close()
        await pool.close()


async def _until_one_fails(engine: Engine, stop: threading.Event) -> None:
    """Run ``engine``; if it fails, stop the other too (the process exits, to be restarted)."""
    try:
        await engine.run(stop)
    except BaseException:
        stop.set()
        raise
