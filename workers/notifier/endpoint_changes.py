"""The notifier's consumer of webhook endpoint changes (``<prefix>.webhook_endpoints``).

Merchants change their endpoints through the API, which publishes each change as an endpoint
event; this consumer applies them to the endpoints the notifier sends to (``endpoints.apply``).
It runs on the consumer engine in a thread of ``run-notifier``, beside the payment intake. A
poll batch is applied in one transaction; each event once, its id recorded in
``notifier.processed_events`` with its effects, so a redelivered change changes nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from psycopg_pool import ConnectionPool

from workers.core.config import Settings
from workers.core.consuming import Batch, Routes, Subscriber, register, run
from workers.core.db import make_pool
from workers.core.endpoint_events import EndpointEvent, EndpointEventType, decode_endpoint_event
from workers.core.sql import load_queries
from workers.core.topics import GROUP_NOTIFIER_ENDPOINTS, topics
from workers.notifier import endpoints

Q = load_queries("workers.notifier")
log = logging.getLogger(__name__)
ROLE: Final = "notifier-endpoints"


class EndpointChanges:
    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def apply(self, batch: Batch) -> None:
        changes = [_change(item.envelope) for item in batch.items]
        with self.pool.connection() as conn, conn.transaction():
            ids = [change.event_id for change in changes]
            marked = conn.execute(Q["events_mark_processed"], {"event_ids": ids}).fetchall()
            new = {row[0] for row in marked}
            for change in changes:
                if change.event_id in new:  # the first of its copies only
                    new.discard(change.event_id)
                    endpoints.apply(conn, change)


def _change(envelope: object) -> EndpointEvent:
    assert isinstance(envelope, EndpointEvent)  # this topic's decoder made it
    return envelope


ROUTES: Final = register(
    Routes[EndpointChanges](
        ROLE, {kind: EndpointChanges.apply for kind in EndpointEventType}, EndpointEventType
    )
)


def subscriber(settings: Settings, changes: EndpointChanges) -> Subscriber[EndpointChanges]:
    return Subscriber(
        GROUP_NOTIFIER_ENDPOINTS,
        ROLE,
        ROUTES,
        changes,
        principal="notifier",
        topics=(topics(settings).webhook_endpoints,),
        decode=decode_endpoint_event,
    )


def start(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Apply endpoint changes in a background thread until ``stop`` is set; should it die
    otherwise, it sets ``stop`` (the notifier stops, and its supervisor starts it anew)."""
    pool = make_pool(settings, "notifier", name=ROLE)

    def consume() -> None:
        try:
            run(settings, subscriber(settings, EndpointChanges(pool)), stop)
        except BaseException:
            if not stop.is_set():
                log.critical("endpoint changes stopped; the notifier stops too", exc_info=True)
                stop.set()
            raise
        finally:
            pool.close()

    thread = threading.Thread(target=consume, name=ROLE, daemon=True)
    thread.start()
    return thread
