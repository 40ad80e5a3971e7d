"""A FlowPay stack of the scenario's own: its PostgreSQL cluster and Kafka broker, on free ports.

It lives under its own home, never touching the shared dev stack, because the scenario kills
its broker and restarts its database. Every role gets the same settings through ``FLOWPAY_*``
variables; the scenario's process builds the same ``Settings`` from the same values.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.core.config import Settings, load_settings
from workers.core.db import connect, database_url
from workers.core.kafka import create_topics
from workers.core.ports import free_port as free_port
from workers.devstack import kafka, postgres
from workers.devstack.paths import StackPaths
from workers.devstack.procs import read_pid, wait_gone
from workers.migrations.runner import migrate

# Short timeouts everywhere, so that a fault is noticed, and recovered from, in seconds.
TUNING: dict[str, str] = {
    "kafka__session_timeout_ms": "6000",
    "worker__poll_timeout_s": "0.1",
    "worker__retry_max_backoff_s": "2",
    "outbox__delivery_timeout_s": "5",
    "outbox__poll_interval_s": "0.5",
    "gateway__timeout_s": "0.5",
    "gateway__max_retries": "1",
    "gateway__backoff_base_s": "0.05",
    "gateway_sim__timeout_hold_s": "1.5",
    "processor__reconcile_interval_s": "0.3",
    "processor__recheck_first_s": "0.3",
    "processor__recheck_max_s": "1",
    "processor__unknown_deadline_s": "15",
    "processor__late_charge_window_s": "120",
    "notifier__schedule_s": "[0, 0.5, 1, 2, 3, 5, 5, 5, 5, 5, 10, 10, 10, 10, 10, 10]",
    "notifier__jitter": "0.1",
    "notifier__attempt_deadline_s": "1.5",
    "notifier__lease_s": "6.5",
    # The scenario's webhook receiver is its own, on 127.0.0.1 over http.
    "notifier__allow_insecure_http": "true",
    "notifier__allow_private_targets": "true",
    "notifier__poll_interval_s": "0.2",
    "notifier__max_retry_after_s": "5",
    "dev__kafka_heap": "384m",
}


@dataclass(frozen=True)
class ChaosStack:
    home: Path
    settings: Settings
    env: dict[str, str]  # for `flowpay` subprocesses: the same settings as ``settings``
    db_password: str

    @property
    def paths(self) -> StackPaths:
        return StackPaths.of(self.settings)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api.port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_sim.port}"


def _nested(flat: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        section, _, name = key.partition("__")
        # The environment's way of spelling a list is JSON; the in-process one is a list.
        tree.setdefault(section, {})[name] = json.loads(value) if value[:1] == "[" else value
    return tree


def configure(home: Path, *, partitions: int, extra: dict[str, str] | None = None) -> ChaosStack:
    """Settings for a stack under ``home`` on free ports; nothing is started."""
    # The shared stack's jars (resolved from Maven Central the first time) serve this broker too.
    libs = kafka.resolve_jars(load_settings())
    password = secrets.token_urlsafe(18)
    pg_port = free_port()
    flat = {
        **TUNING,
        "database__url": f"postgresql://{postgres.SUPERUSER}:{password}@127.0.0.1:{pg_port}/"
        f"{postgres.DATABASE}",
        "kafka__topic_prefix": "chaos",
        "kafka__partitions": str(partitions),
        "dev__home": str(home.resolve()),
        "dev__pg_port": str(pg_port),
        "dev__kafka_port": str(free_port()),
        "dev__kafka_controller_port": str(free_port()),
        "dev__kafka_home": str(libs.parent),
        "api__port": str(free_port()),
        "gateway_sim__port": str(free_port()),
        "gateway_sim__db_path": str(home.resolve() / "gateway-sim.sqlite3"),
        # Two instances of a role would clash on one metrics port, and so would a dev stack's.
        "metrics__enabled": "false",
        **(extra or {}),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPAY_")}
    env |= {f"FLOWPAY_{key.upper()}": value for key, value in flat.items()}
    settings = Settings(**_nested(flat))
    return ChaosStack(home.resolve(), settings, env, password)


def start(stack: ChaosStack) -> None:
    """PostgreSQL (with a password on its user), the schema, Kafka and the topics."""
    stack.paths.logs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(2) as both:  # neither waits for the other
        database = both.submit(_start_database, stack)
        broker = both.submit(start_kafka, stack)
        database.result()
        broker.result()
    create_topics(stack.settings)


def _start_database(stack: ChaosStack) -> None:
    start_postgres(stack)
    with connect(stack.settings, autocommit=True) as conn:
        # The cluster trusts local connections; the password is set so that there is one to leak.
        conn.execute(f"ALTER ROLE {postgres.SUPERUSER} PASSWORD '{stack.db_password}'")
    migrate(database_url(stack.settings))


def start_postgres(stack: ChaosStack) -> None:
    postgres.up(stack.settings)


def stop_postgres(stack: ChaosStack) -> None:
    """A fast shutdown: clients are disconnected, open transactions rolled back."""
    postgres.down(stack.settings)


def start_kafka(stack: ChaosStack) -> None:
    kafka.up(stack.settings)


def kill_kafka(stack: ChaosStack) -> None:
    pid = read_pid(stack.paths.kafka_pid)
    if pid is None:
        return
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid, kafka.MAIN_CLASS, timeout_s=30)


def stop(stack: ChaosStack) -> None:
    # The broker's data is the scenario's own and never reused, so there is no need to wait out
    # a controlled shutdown.
    kill_kafka(stack)
    postgres.down(stack.settings)
