"""A worker for tests on the consumer engine: applies each batch once per event, slowly.

Run as ``python -m tests.helpers.recording_worker GROUP DELAY_S [failing]`` with FLOWPAY_*
pointing at the test's database and topics. It stops gracefully on SIGTERM like every role.

Each call first notes every event it was given in ``deliveries`` (autocommit: redeliveries
show), then in one transaction, after ``DELAY_S`` (so that a kill lands mid-batch), dedupes by
event id (``applied``) and adds the new events' amounts to ``total``: the effect that must
count each event exactly once. ``failing``: every call raises a transient error instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import psycopg

from workers.core.config import load_settings
from workers.core.consuming import Batch, Routes, Subscriber, run
from workers.core.db import admin_url
from workers.core.errors import TransientError
from workers.core.events import EventType, Initiated
from workers.core.lifecycle import install_stop_handlers
from workers.core.logs import setup_logging

TABLES = """
CREATE TABLE IF NOT EXISTS public.deliveries (n bigserial PRIMARY KEY, event_id uuid NOT NULL);
CREATE TABLE IF NOT EXISTS public.applied (n bigserial, event_id uuid PRIMARY KEY);
CREATE TABLE IF NOT EXISTS public.total (one boolean PRIMARY KEY DEFAULT true, amount bigint);
INSERT INTO public.total (amount) VALUES (0) ON CONFLICT DO NOTHING;
"""
APPLY = """
WITH fresh AS (
    INSERT INTO public.applied (event_id) SELECT unnest(%(ids)s::uuid[])
    ON CONFLICT DO NOTHING RETURNING event_id
)
UPDATE public.total SET amount = amount + coalesce((
    SELECT sum(e.amount) FROM unnest(%(ids)s::uuid[], %(amounts)s::bigint[]) AS e(id, amount)
    JOIN fresh ON fresh.event_id = e.id), 0)
"""


class Recording:
    def __init__(self, conn: psycopg.Connection[Any], delay_s: float, failing: bool) -> None:
        self.conn = conn
        self.delay_s = delay_s
        self.failing = failing

    def apply(self, batch: Batch) -> None:
        events = batch.events
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO public.deliveries (event_id) VALUES (%s)",
                [(e.event_id,) for e in events],
            )
        if self.failing:
            raise TransientError("always away")
        with self.conn.transaction():
            time.sleep(self.delay_s)
            ids = [e.event_id for e in events]
            amounts = [e.payload(Initiated).amount for e in events]
            self.conn.execute(APPLY, {"ids": ids, "amounts": amounts})


ROUTES = Routes[Recording]("recording-worker", {t: Recording.apply for t in EventType})


def main() -> None:
    group, delay_s = sys.argv[1], float(sys.argv[2])
    failing = sys.argv[3:] == ["failing"]
    settings = load_settings()
    setup_logging("INFO", "recording-worker")
    conn = psycopg.connect(admin_url(settings), autocommit=True)
    conn.execute(TABLES)
    stop = install_stop_handlers(settings.worker.grace_period_s)
    handlers = Recording(conn, delay_s, failing)
    run(
        settings,
        Subscriber(group, "recording-worker", ROUTES, handlers, principal="operator"),
        stop,
    )


if __name__ == "__main__":
    main()
