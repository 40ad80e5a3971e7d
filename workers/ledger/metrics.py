"""The ledger's Prometheus metrics: events applied, postings by kind, and replay progress.

``run-ledger`` serves them on ``metrics.ledger_port``; ``flowpay replay`` serves its progress on
``metrics.replay_port`` while it runs. The ledger's consumer takes a poll batch as one unit, so
its handler latency and outcomes (``workers.core.metrics``) are per batch.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import Counter, Gauge

from workers.core.config import Settings
from workers.core.metrics import serve_metrics

EVENTS_APPLIED = Counter(
    "flowpay_ledger_events_applied", "Payment events the live ledger applied (posted or recorded)."
)
POSTINGS = Counter(
    "flowpay_ledger_postings", "Journal transactions the live ledger posted, by kind.", ["kind"]
)
REPLAY_TOTAL = Gauge(
    "flowpay_ledger_replay_messages", "Messages the running replay has to read, all in all."
)
REPLAY_READ = Gauge("flowpay_ledger_replay_read_messages", "Messages the running replay has read.")


def committed(events: int, postings: Tally[str]) -> None:
    """A batch transaction committed ``events`` applied events and these postings."""
    EVENTS_APPLIED.inc(events)
    for kind, count in postings.items():
        POSTINGS.labels(kind).inc(count)


def replay_started(total: int) -> None:
    REPLAY_TOTAL.set(total)
    REPLAY_READ.set(0)


def replay_read(count: int) -> None:
    REPLAY_READ.inc(count)


def start(settings: Settings) -> None:
    serve_metrics(settings, settings.metrics.ledger_port)


def start_replay(settings: Settings) -> None:
    serve_metrics(settings, settings.metrics.replay_port)
