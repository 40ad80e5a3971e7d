"""Reading real roles' /metrics in tests: a free port for every role, and scraping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import override
from tests.helpers.flow import Flow, flow
from tests.helpers.receiver import Receiver, receiver
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for
from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.core.sealing import keyring
from workers.notifier.endpoints import register_endpoint

ROLES = ("api", "outbox", "processor", "ledger", "notifier", "orchestrator", "replay")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class MetricPorts:
    """A free metrics port per role, and the environment that makes the roles serve there."""

    ports: dict[str, int] = field(default_factory=lambda: {r: free_port() for r in ROLES})

    def env(self) -> dict[str, str]:
        env = {"FLOWPAY_METRICS__ENABLED": "true"}
        for role, port in self.ports.items():
            env[f"FLOWPAY_METRICS__{role.upper()}_PORT"] = str(port)
        return env

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}/metrics"

    def scrape(self, role: str) -> Samples:
        return scrape(self.url(role))


def scrape(url: str) -> Samples:
    text = local_http.client().get(url, timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def label_values(samples: Samples, name: str, label: str, **labels: str) -> set[str]:
    wanted = set(labels.items())
    return {
        dict(have)[label]
        for (n, have), _v in samples.items()
        if n == name and wanted <= have and label in dict(have)
    }


FAST_WEBHOOKS = {
    "FLOWPAY_NOTIFIER__SCHEDULE_S": "[0, 0.3]",
    "FLOWPAY_NOTIFIER__POLL_INTERVAL_S": "0.1",
}
TERMINAL = ("succeeded", "failed")
# Every role of a stack shares two cores with the rest of the suite: waits get a wide margin.
PATIENCE_S = 180.0


@dataclass
class Stack:
    flow: Flow
    metrics: MetricPorts
    hook: Receiver

    def settle(self, count: int) -> None:
        """Send ``count`` payments (the last one declined) and wait for all their webhooks."""
        delivered = len(self.hook.delivered())
        payments = [self.flow.pay() for _ in range(count - 1)]
        payments.append(self.flow.pay(method="pm_card_chargeDeclined"))
        for payment in payments:
            self.flow.wait_for(str(payment["id"]), lambda p: p["status"] in TERMINAL, PATIENCE_S)
        self.hook.wait_for(delivered + count, PATIENCE_S)

    def settings(self) -> Settings:
        """The test's settings, pointed at the roles' metrics ports."""
        ports = {f"{role}_port": port for role, port in self.metrics.ports.items()}
        return override(self.flow.settings, "metrics", enabled=True, **ports)


@contextmanager
def observed_stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    """Every role as a real process, each serving /metrics on its own free port."""
    metrics = MetricPorts()
    env = {**metrics.env(), **FAST_WEBHOOKS}
    with receiver(free_port()) as hook, flow(settings, tmp_path, extra_env=env) as f:
        with psycopg.connect(admin_url(settings), autocommit=True) as conn:
            hook.secret = register_endpoint(
                conn, f.merchant_id, hook.url, settings.notifier, keyring(settings)
            ).secret
        f.start("ledger", ["run-ledger"])
        f.start("notifier", ["run-notifier"])
        silent = set(SERVING_ROLES)

        def serving() -> bool:
            silent.intersection_update(_silent(metrics, silent))
            return not silent

        try:
            wait_for(serving, PATIENCE_S, "every role's /metrics")
        except AssertionError:
            raise AssertionError(f"no /metrics from {sorted(silent)}") from None
        yield Stack(f, metrics, hook)


SERVING_ROLES = ("api", "outbox", "processor", "ledger", "notifier")


def _silent(metrics: MetricPorts, roles: set[str]) -> set[str]:
    """The roles whose /metrics does not answer yet."""
    silent = set()
    for role in roles:
        try:
            metrics.scrape(role)
        except httpx.HTTPError:
            silent.add(role)
    return silent
