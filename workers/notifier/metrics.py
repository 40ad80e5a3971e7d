"""The notifier's Prometheus metrics: webhook attempts by outcome and attempt number, backlog."""

from __future__ import annotations

from typing import Final, cast

import psycopg
from prometheus_client import Counter, Gauge

from workers.core.config import Settings
from workers.core.metrics import DatabaseSampler, serve_metrics
from workers.core.sql import load_queries

Q = load_queries("workers.notifier")
# delivered | retry (scheduled again) | failed (the last attempt failed) | gone (410: disabled)
# | disabled (the endpoint had failed every attempt for notifier.disable_after_s: disabled)
OUTCOMES: Final = ("delivered", "retry", "failed", "gone", "disabled")
# gone (it answered 410) | failing (every attempt failed for notifier.disable_after_s)
DISABLE_REASONS: Final = ("gone", "failing")
# What the gauge counts: delivered ones only grow (the deliveries counter has them).
STATUSES: Final = ("pending", "failed")

DELIVERIES = Counter(
    "flowpay_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retry, failed, gone, disabled) and attempt"
    " number.",
    ["outcome", "attempt"],
)
ENDPOINTS_DISABLED = Counter(
    "flowpay_webhook_endpoints_disabled",
    "Webhook endpoints the notifier disabled, by reason (gone, failing).",
    ["reason"],
)
WAITING_FOR_ENDPOINTS = Gauge(
    "flowpay_webhook_intake_waiting_for_endpoints",
    "Intake batches waiting for the endpoint changes published before them to be applied"
    " (long above 0: the consumer of endpoint changes is stuck or far behind).",
)
BY_STATUS = Gauge(
    "flowpay_webhook_deliveries_by_status",
    "Webhook deliveries waiting or failed, by status (pending, failed).",
    ["status"],
)


def attempted(outcome: str, attempt: int) -> None:
    DELIVERIES.labels(outcome, str(attempt)).inc()


def endpoint_disabled(reason: str) -> None:
    ENDPOINTS_DISABLED.labels(reason).inc()


def delivery_counts(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    """Deliveries pending and failed (also what `flowpay top` shows)."""
    row = cast(tuple[int, int], conn.execute(Q["deliveries_by_status"]).fetchone())
    return dict(zip(STATUSES, row, strict=True))


def start(settings: Settings) -> None:
    """Serve the notifier's metrics, and keep the per-status counts current."""
    if serve_metrics(settings, settings.metrics.notifier_port) is not None:
        DatabaseSampler(settings, "notifier", sample).start()


def sample(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Set the per-status gauges from the database."""
    for status, count in delivery_counts(conn).items():
        BY_STATUS.labels(status).set(count)
