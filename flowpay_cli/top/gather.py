"""What `flowpay top` shows, gathered from every role's /metrics and from the database.

Rendering lives in ``flowpay_cli.top.view``; this module only reads. Rates are counter deltas
between two gatherings, so the first ``Snapshot`` of a ``Gatherer`` has none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from workers.core.config import Settings
from workers.core.db import connect
from workers.core.topics import ALL_GROUPS
from workers.notifier.metrics import delivery_counts
from workers.outbox.metrics import Backlog, backlogs
from workers.processor.metrics import Watched, reconciler_backlog

# A busy role answers its scrape late (its metrics share the process; serve-api's sums every
# server process's files): wait for it a while, or it shows as DOWN.
SCRAPE_TIMEOUT_S: Final = 3.0
# The role whose /metrics each port of [metrics] serves.
ROLE_PORTS: Final = {
    "api": "api_port",
    "outbox": "outbox_port",
    "processor": "processor_port",
    "ledger": "ledger_port",
    "notifier": "notifier_port",
}

Labels = dict[str, str]
Sample = tuple[str, Labels, float]


def _any(_labels: Labels) -> bool:
    return True


def _is(**wanted: str | tuple[str, ...]) -> Callable[[Labels], bool]:
    def match(labels: Labels) -> bool:
        for key, value in wanted.items():
            allowed = value if isinstance(value, tuple) else (value,)
            if labels.get(key) not in allowed:
                return False
        return True

    return match


@dataclass(frozen=True)
class Stage:
    """One stage's throughput: a counter summed over the samples that ``match``."""

    name: str
    unit: str
    role: str
    sample: str
    match: Callable[[Labels], bool] = _any


STAGES: Final = (
    Stage("API accepted", "payments", "api", "flowpay_api_requests_total",
          _is(method="POST", route="/v1/payments", status="202")),
    Stage("relay published", "events", "outbox", "flowpay_outbox_published_total"),
    Stage("processor charged", "payments", "processor", "flowpay_gateway_calls_total",
          _is(operation="charge", outcome=("success", "decline", "rejected"))),
    Stage("ledger applied", "events", "ledger", "flowpay_ledger_events_applied_total"),
    Stage("webhooks delivered", "webhooks", "notifier", "flowpay_webhook_deliveries_total",
          _is(outcome="delivered")),
)  # fmt: skip


@dataclass(frozen=True)
class Throughput:
    stage: str
    unit: str
    total: float | None  # None: the role's metrics did not answer
    per_s: float | None  # None: no earlier gathering to compare with


@dataclass(frozen=True)
class Lag:
    group: str
    messages: int | None
    partitions: int


@dataclass
class Snapshot:
    at: datetime
    roles: dict[str, bool]  # role -> its /metrics answered
    database: bool
    throughput: list[Throughput]
    lag: list[Lag]
    outbox: list[Backlog] = field(default_factory=list)
    gateway_in_flight: int | None = None
    reconciler: list[Watched] = field(default_factory=list)
    webhooks: dict[str, int] = field(default_factory=dict)  # deliveries pending and failed
    webhook_failed_attempts: int | None = None  # attempts that failed, since the notifier began
    dead_letters: dict[str, int] = field(default_factory=dict)  # per group, since roles began

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


class Gatherer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http = httpx.Client(timeout=SCRAPE_TIMEOUT_S)
        self._pool = ThreadPoolExecutor(len(ROLE_PORTS), thread_name_prefix="top-scrape")
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._previous: tuple[float, dict[str, float | None]] | None = None

    def close(self) -> None:
        self._pool.shutdown()
        self._http.close()
        if self._conn is not None:
            self._conn.close()

    def endpoints(self) -> dict[str, str]:
        """Role -> its metrics URL, for the roles whose metrics are on."""
        metrics = self.settings.metrics
        host = "127.0.0.1" if metrics.host in ("0.0.0.0", "") else metrics.host
        ports = {role: getattr(metrics, key) for role, key in ROLE_PORTS.items()}
        return {role: f"http://{host}:{port}/metrics" for role, port in ports.items() if port}

    def gather(self) -> Snapshot:
        endpoints = self.endpoints()
        scraped = dict(
            zip(endpoints, self._pool.map(self._scrape, endpoints.values()), strict=True)
        )
        samples = [s for found in scraped.values() if found is not None for s in found]
        up = {role: found is not None for role, found in scraped.items()}

        def total(role: str, name: str, match: Callable[[Labels], bool] = _any) -> float | None:
            return _sum(samples, name, match) if up.get(role) else None

        snapshot = Snapshot(
            at=datetime.now(UTC),
            roles=up,
            database=False,
            throughput=self._throughput({s.name: total(s.role, s.sample, s.match) for s in STAGES}),
            lag=_lag(samples),
            gateway_in_flight=_int(total("processor", "flowpay_gateway_in_flight")),
            webhook_failed_attempts=_int(
                total(
                    "notifier",
                    "flowpay_webhook_deliveries_total",
                    _is(outcome=("retry", "failed", "gone")),
                )
            ),
            dead_letters={
                group: int(_sum(samples, "flowpay_dead_letters_total", _is(group=group)))
                for group in ALL_GROUPS
            },
        )
        self._read_database(snapshot)
        return snapshot

    def gather_rates(self, interval_s: float = 1.0) -> Snapshot:
        """A snapshot with rates: two gatherings ``interval_s`` apart (for one-off views)."""
        self.gather()
        time.sleep(interval_s)
        return self.gather()

    def _scrape(self, url: str) -> list[Sample] | None:
        try:
            response = self._http.get(url)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(response.text)
            if family.name.startswith("flowpay_")
            for s in family.samples
        ]

    def _throughput(self, totals: dict[str, float | None]) -> list[Throughput]:
        now = time.monotonic()
        rows = [
            Throughput(s.name, s.unit, totals[s.name], self._rate(s.name, totals[s.name], now))
            for s in STAGES
        ]
        self._previous = (now, totals)
        return rows

    def _rate(self, stage: str, total: float | None, now: float) -> float | None:
        if self._previous is None or total is None:
            return None
        then, totals = self._previous
        before = totals.get(stage)
        if before is None or now <= then:
            return None
        # A restarted role's counters begin again at 0: count from there.
        delta = total - before if total >= before else total
        return delta / (now - then)

    def _read_database(self, snapshot: Snapshot) -> None:
        try:
            conn = self._connection()
            snapshot.outbox = backlogs(conn)
            snapshot.reconciler = reconciler_backlog(conn)
            snapshot.webhooks = delivery_counts(conn)
            snapshot.database = True
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.settings, "operator", autocommit=True)
        return self._conn


def _sum(samples: Iterable[Sample], name: str, match: Callable[[Labels], bool] = _any) -> float:
    return sum(value for sample, labels, value in samples if sample == name and match(labels))


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _lag(samples: list[Sample]) -> list[Lag]:
    lags = []
    for group in ALL_GROUPS:
        of_group = _is(group=group)
        values = [v for n, labels, v in samples if n == "flowpay_consumer_lag" and of_group(labels)]
        lags.append(Lag(group, int(sum(values)) if values else None, len(values)))
    return lags
