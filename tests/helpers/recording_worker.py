"""A worker for tests: records every event it handles in PostgreSQL, slowly, via the shared runner.

Run as ``python -m tests.helpers.recording_worker GROUP DELAY_S`` with FLOWPAY_* pointing at the
test's database and topics. It stops gracefully on SIGTERM like every FlowPay role.
"""

from __future__ import annotations

import sys
import time

import psycopg

from workers.core.config import load_settings
from workers.core.db import database_url
from workers.core.events import Event
from workers.core.kafka import Message
from workers.core.lifecycle import install_stop_handlers
from workers.core.logs import setup_logging
from workers.core.runner import ConsumerRunner

TABLE = (
    "CREATE TABLE IF NOT EXISTS public.handled (n bigserial PRIMARY KEY, event_id uuid NOT NULL)"
)


def main() -> None:
    group, delay_s = sys.argv[1], float(sys.argv[2])
    settings = load_settings()
    setup_logging("INFO", "recording-worker")
    conn = psycopg.connect(database_url(settings), autocommit=True)
    conn.execute(TABLE)

    def handle(event: Event, _message: Message) -> None:
        time.sleep(delay_s)
        conn.execute("INSERT INTO public.handled (event_id) VALUES (%s)", (event.event_id,))

    stop = install_stop_handlers(settings.worker.grace_period_s)
    ConsumerRunner(settings, group=group, role="recording-worker", handler=handle).run(stop)


if __name__ == "__main__":
    main()
