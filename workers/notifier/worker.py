"""`flowpay run-notifier`: the consumer (recording deliveries) and the sender, in one process."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from workers.core import observe
from workers.core.config import Settings
from workers.core.db import connect, database_url, make_pool
from workers.core.lifecycle import install_stop_handlers
from workers.core.runner import ConsumerRunner
from workers.core.sealing import Keyring, keyring
from workers.core.topics import GROUP_NOTIFIER
from workers.notifier import metrics
from workers.notifier.endpoint_secrets import check_keys
from workers.notifier.intake import Intake
from workers.notifier.sender import Sender
from workers.notifier.wakeup import Wakeup

log = logging.getLogger(__name__)
ROLE: Final = "notifier"
# Their INFO lines name every endpoint's URL, once per request; the sender's own line per attempt
# names the endpoint by its id.
QUIET_LOGGERS = ("httpx", "httpcore")


def serve(settings: Settings) -> None:
    keys = _keys(settings)
    observe.start(settings, ROLE)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    metrics.start(settings)
    pool = make_pool(settings, "notifier", name=f"{ROLE}-intake")
    wakeup = Wakeup()
    intake = Intake(pool, on_recorded=wakeup.set)
    runner = ConsumerRunner(
        settings,
        group=GROUP_NOTIFIER,
        role=ROLE,
        handler=intake.handle,
        batch_handler=intake.handle_batch,
    )

    def consume() -> None:
        try:
            runner.run(stop)
        finally:
            wakeup.set()  # a stop reaches the sender at once, not after its poll interval

    consumer = threading.Thread(target=consume, name="notifier-consumer")
    consumer.start()
    try:
        asyncio.run(_send(settings, keys, stop, wakeup))
    finally:
        stop.set()
        consumer.join()
        pool.close()


def _keys(settings: Settings) -> Keyring:
    """The keys that open the endpoints' secrets. Without one, or without one the secrets need,
    the notifier could sign nothing: ConfigError (one line, exit 2) before anything starts."""
    keys = keyring(settings)
    with connect(settings, ROLE) as conn:
        uses = check_keys(conn, keys)
    plain = sum(use.secrets for use in uses if use.key_id is None)
    if plain:
        log.warning(
            "%d webhook secrets are in plain text: `flowpay secrets rotate` seals them", plain
        )
    return keys


async def _send(settings: Settings, keys: Keyring, stop: threading.Event, wakeup: Wakeup) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url(settings, "notifier"),
        min_size=1,
        max_size=settings.database.pool_max_size,
        open=False,
        name=ROLE,
    )
    await pool.open()
    try:
        await Sender(settings.notifier, pool, keys, wakeup).run(stop)
    finally:
        await pool.close()
