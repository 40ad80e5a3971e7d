"""`flowpay run-notifier`: the intake on the consumer engine and the sender, on one event loop
in one process, so that the intake hands fresh deliveries to the sender in memory; beside them,
the consumer of endpoint changes (``endpoint_changes``), in a thread of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from workers.core import heap, observe
from workers.core.config import Settings
from workers.core.consuming import IGNORE, Engine, Routes, Subscriber, register
from workers.core.db import connect_at_start, database_url
from workers.core.events import EventType
from workers.core.lifecycle import install_stop_handlers
from workers.core.loop import run_async
from workers.core.sealing import Keyring, keyring
from workers.core.topics import GROUP_NOTIFIER
from workers.notifier import endpoint_changes, metrics
from workers.notifier.endpoint_catch_up import EndpointCatchUp
from workers.notifier.endpoint_secrets import check_keys
from workers.notifier.intake import NOTIFIED, Intake
from workers.notifier.sender import Sender

log = logging.getLogger(__name__)
ROLE: Final = "notifier"
# Their INFO lines name every endpoint's URL, once per request; the sender's own line per attempt
# names the endpoint by its id.
QUIET_LOGGERS = ("httpx", "httpcore")
# Poll batches recorded at once: one's statements overlap the other's commit.
BATCHES_IN_FLIGHT: Final = 2

ROUTES: Final = register(
    Routes[Intake](
        ROLE,
        {
            # Its view of the payment starts here (amount, currency, metadata: what webhooks show).
            EventType.INITIATED: Intake.take,
            EventType.AUTHORIZATION_REQUESTED: Intake.take,
            # No webhook, and nothing a webhook shows depends on it: the status it sets is
            # passed by the terminal event that follows.
            EventType.PROCESSING: IGNORE,
            # No webhook: its outcome (refunded or refund_failed) is the one merchants hear of.
            EventType.REFUND_REQUESTED: IGNORE,
            # No webhook: a gateway's report is not a payment's outcome merchants are told of.
            EventType.GATEWAY_REPORTED: IGNORE,
            # Its view of the payout starts here (what payout.paid and payout.failed show).
            EventType.PAYOUT_REQUESTED: Intake.take,
            # No webhook: a merchant's own capture or cancel; its outcome is the one told.
            EventType.CAPTURE_REQUESTED: IGNORE,
            EventType.CANCEL_REQUESTED: IGNORE,
            **{event_type: Intake.take for event_type in NOTIFIED},
        },
    )
)


def subscriber(intake: Intake) -> Subscriber[Intake]:
    return Subscriber(
        GROUP_NOTIFIER, ROLE, ROUTES, intake, principal="notifier", max_in_flight=BATCHES_IN_FLIGHT
    )


def serve(settings: Settings) -> None:
    keys = _keys(settings)
    observe.start(settings, ROLE)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    metrics.start(settings)
    heap.settle()
    run_async(run(settings, keys, stop))


def _keys(settings: Settings) -> Keyring:
    """The keys that open the endpoints' secrets. Without one, or without one the secrets need,
    the notifier could sign nothing: ConfigError (one line, exit 2) before anything starts."""
    keys = keyring(settings)
    with connect_at_start(settings, ROLE) as conn:
        uses = check_keys(conn, keys)
    plain = sum(use.secrets for use in uses if use.key_id is None)
    if plain:
        log.warning(
            "%d webhook secrets are in plain text: `flowpay secrets rotate` seals them", plain
        )
    return keys


async def run(settings: Settings, keys: Keyring, stop: threading.Event) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url(settings, ROLE),
        min_size=1,
        max_size=settings.database.pool_max_size,
        open=False,
        name=ROLE,
    )
    await pool.open()
    sender = Sender(settings.notifier, pool, keys)
    catch_up = EndpointCatchUp(settings)
    intake = Intake(settings.notifier, pool, sender, catch_up)
    engine = Engine(settings, subscriber(intake))
    # The engine's stop ends the sender's claims too; attempts in flight end and are recorded.
    sending = asyncio.create_task(sender.run(engine.stopping))
    # A sender that fails stops the process (its supervisor starts it anew), not just sending.
    sending.add_done_callback(lambda _task: engine.stopping.set())
    changes = endpoint_changes.start(settings, stop)
    try:
        await engine.run(stop)
    finally:
        engine.stopping.set()
        stop.set()  # the endpoint changes' thread stops with the rest
        await sending
        await asyncio.to_thread(changes.join)
        await asyncio.to_thread(catch_up.close)
        await pool.close()
