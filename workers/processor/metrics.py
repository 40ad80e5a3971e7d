"""The processor's Prometheus metrics: gateway calls and the reconciler's backlog.

A gateway *call* (charge, refund, lookup, refund_lookup) ends as success, decline, rejected or
unknown (its retries ran out); each HTTP *attempt* within it ends answered, or timeout, lost_ack
(the connection dropped after the request went out: the gateway may have acted), connect_error,
server_error (5xx, 429) or conflict (409: the key's first request is still in progress).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, cast

import httpx
import psycopg
from prometheus_client import Counter, Gauge, Histogram

from workers.core.config import Settings
from workers.core.metrics import DatabaseSampler, serve_metrics
from workers.core.outbound_http import AnswerRefused
from workers.core.sql import load_queries

Q = load_queries("workers.processor")
GATEWAY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

CALLS = Counter(
    "flowpay_gateway_calls",
    "Gateway calls by operation (charge, refund, lookup, refund_lookup, authorize, capture,"
    " void, authorization_lookup, payout, payout_lookup) and outcome"
    " (success, decline, rejected, unknown).",
    ["operation", "outcome"],
)
CALL_SECONDS = Histogram(
    "flowpay_gateway_call_duration_seconds",
    "Time a gateway call took, retries included, by operation.",
    ["operation"],
    buckets=GATEWAY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "flowpay_gateway_in_flight", "Gateway calls under way, by operation.", ["operation"]
)
ATTEMPTS = Counter(
    "flowpay_gateway_attempts",
    "HTTP requests to the gateway by request and outcome"
    " (answered, timeout, lost_ack, connect_error, server_error, conflict).",
    ["request", "outcome"],
)
REPORTS = Counter(
    "flowpay_gateway_reports",
    "The gateway's reports (its webhooks) by type and what came of each (applied, stale,"
    " duplicate, contradicted, unknown_payment, unknown_payout, refunds_rechecked,"
    " nothing_to_recheck).",
    ["type", "outcome"],
)
RECONCILER_BACKLOG = Gauge(
    "flowpay_reconciler_backlog",
    "Payments the reconciler watches, by state (processing: outcome unknown or pending at the"
    " gateway; requires_action: waiting for the customer; failed: watched for a late charge).",
    ["state"],
)
RECONCILER_DUE = Gauge(
    "flowpay_reconciler_due", "Watched payments whose re-check is due now, by state.", ["state"]
)
WATCHED_STATES: Final = ("processing", "requires_action", "failed")
REFUND_BACKLOG = Gauge(
    "flowpay_reconciler_refund_backlog",
    "Refunds whose outcome is unknown, left requested for the reconciler to re-check.",
)
REFUNDS_DUE = Gauge(
    "flowpay_reconciler_refunds_due", "Refunds of the backlog whose re-check is due now."
)


def attempted(method: str, path: str, failure: BaseException | None, status: int = 0) -> None:
    """One HTTP request to the gateway: ``failure`` is what httpx raised, if anything."""
    ATTEMPTS.labels(f"{method} {route_of(path)}", _attempt_outcome(failure, status)).inc()


def route_of(path: str) -> str:
    """The path as a label: an object's id (``/v1/authorizations/<id>/capture``) is ``{id}``, so
    that the label's values stay few."""
    parts = path.split("/")
    if len(parts) > 3 and parts[3]:
        parts[3] = "{id}"
    return "/".join(parts)


def _attempt_outcome(failure: BaseException | None, status: int) -> str:
    if isinstance(failure, httpx.TimeoutException):
        return "timeout"
    if isinstance(failure, httpx.ConnectError):
        return "connect_error"
    if isinstance(failure, AnswerRefused):
        return "answer_refused"
    if failure is not None:
        return "lost_ack"
    if status == 409:
        return "conflict"
    return "server_error" if status >= 500 or status == 429 else "answered"


@dataclass(frozen=True)
class Watched:
    state: str
    payments: int
    due: int


def reconciler_backlog(conn: psycopg.Connection[tuple[object, ...]]) -> list[Watched]:
    """Payments the reconciler watches, per state (also what `flowpay top` shows)."""
    rows = cast(list[tuple[str, int, int]], conn.execute(Q["reconciler_backlog"]).fetchall())
    found = {state: Watched(state, count, due) for state, count, due in rows}
    return [found.get(state, Watched(state, 0, 0)) for state in WATCHED_STATES]


def refund_backlog(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, int]:
    """Refunds whose outcome is unknown, and how many of them are due now."""
    row = cast(tuple[int, int] | None, conn.execute(Q["refunds_backlog"]).fetchone())
    return (0, 0) if row is None else row


def start(settings: Settings) -> None:
    """Serve the processor's metrics, and keep the reconciler's backlog current."""
    if serve_metrics(settings, settings.metrics.processor_port) is not None:
        DatabaseSampler(settings, "processor", _sample).start()


def _sample(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    for watched in reconciler_backlog(conn):
        RECONCILER_BACKLOG.labels(watched.state).set(watched.payments)
        RECONCILER_DUE.labels(watched.state).set(watched.due)
    refunds, due = refund_backlog(conn)
    REFUND_BACKLOG.set(refunds)
    REFUNDS_DUE.set(due)
