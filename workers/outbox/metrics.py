"""The relay's Prometheus metrics: events published, and the backlog of each outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from prometheus_client import Counter, Gauge

from workers.core.config import Settings
from workers.core.metrics import DatabaseSampler, serve_metrics
from workers.core.outbox import EMITTING_SCHEMAS
from workers.outbox import store
from workers.outbox.store import Conn

PUBLISHED = Counter(
    "flowpay_outbox_published", "Events the relay published to Kafka, by outbox.", ["outbox"]
)
BACKLOG = Gauge("flowpay_outbox_backlog", "Rows not yet published, by outbox.", ["outbox"])
OLDEST_AGE = Gauge(
    "flowpay_outbox_oldest_unpublished_age_seconds",
    "How long the oldest unpublished row has waited (0 when none), by outbox.",
    ["outbox"],
)


@dataclass(frozen=True)
class Backlog:
    outbox: str
    rows: int
    oldest_age_s: float


def backlogs(conn: Conn) -> list[Backlog]:
    """Each emitting schema's unpublished rows (also what `flowpay top` shows)."""
    found = []
    for schema in EMITTING_SCHEMAS:
        row = conn.execute(store.query("backlog", schema)).fetchone()
        rows, age = cast(tuple[int, float], row)
        found.append(Backlog(schema, rows, age))
    return found


def published(outbox: str, count: int) -> None:
    PUBLISHED.labels(outbox).inc(count)


def start(settings: Settings) -> None:
    """Serve the relay's metrics, and keep the backlog gauges current while it runs."""
    for schema in EMITTING_SCHEMAS:
        PUBLISHED.labels(schema)  # present from the start, at 0
    if serve_metrics(settings, settings.metrics.outbox_port) is not None:
        DatabaseSampler(settings, "outbox", _sample).start()


def _sample(conn: Conn) -> None:
    for backlog in backlogs(conn):
        BACKLOG.labels(backlog.outbox).set(backlog.rows)
        OLDEST_AGE.labels(backlog.outbox).set(backlog.oldest_age_s)
