"""A FlowPay stack of the scenario's own: its PostgreSQL cluster and Kafka broker, on free ports.

It lives under its own home, never touching the shared dev stack, because the scenario kills
its broker and restarts its database. Every role gets the same settings through ``FLOWPAY_*``
variables; the scenario's process builds the same ``Settings`` from the same values. Each role
logs in to PostgreSQL as its own role, with its password in its URL (so that there is one to
leak, which the secrets check looks for), and the webhook secrets are sealed with a key of the
scenario's own.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from workers.core.config import DATABASE_ROLES, Settings, load_settings
from workers.core.db import dev_url, role_name
from workers.core.errors import StackError
from workers.core.kafka import create_topics
from workers.core.ports import free_port as free_port
from workers.core.ports import free_ports
from workers.core.sealing import generate_key
from workers.core.topics import topics
from workers.devstack import cluster, credentials, kafka, pg_standby, postgres
from workers.devstack.paths import StackPaths
from workers.migrations.setup import init_database

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
    # Some of the load's authorizations are left to expire: within the run, not in 7 days.
    "orchestrator__authorization_ttl_s": "20",
}


@dataclass(frozen=True)
class ChaosStack:
    home: Path
    settings: Settings
    env: dict[str, str]  # for `flowpay` subprocesses: the same settings as ``settings``
    # Every secret the scenario's configuration holds: the database users' passwords, the key.
    secrets: dict[str, str]

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
        *sections, name = key.split("__")
        table = tree
        for section in sections:
            table = table.setdefault(section, {})
        # The environment's way of spelling a list is JSON; the in-process one is a list.
        table[name] = json.loads(value) if value[:1] == "[" else value
    return tree


def configure(
    home: Path,
    *,
    partitions: int,
    extra: dict[str, str] | None = None,
    brokers: int = 1,
    pg_standby: bool = False,
) -> ChaosStack:
    """Settings for a stack under ``home`` on free ports; nothing is started. ``brokers`` Kafka
    nodes (each with a client and a controller port, counting up), and with ``pg_standby`` a
    synchronous standby (and pg_auto_failover's monitor) on the ports after PostgreSQL's."""
    # The shared stack's jars (resolved from Maven Central the first time) serve this broker too.
    libs = kafka.resolve_jars(load_settings())
    kafka_port = free_ports(2 * brokers)
    flat = {
        **TUNING,
        "kafka__topic_prefix": "chaos",
        "kafka__partitions": str(partitions),
        "dev__home": str(home.resolve()),
        "dev__pg_port": str(free_ports(3 if pg_standby else 1)),
        "dev__pg_standby": str(pg_standby).lower(),
        "dev__kafka_port": str(kafka_port),
        "dev__kafka_controller_port": str(kafka_port + 1),
        "dev__kafka_brokers": str(brokers),
        "dev__kafka_home": str(libs.parent),
        "api__port": str(free_port()),
        "gateway_sim__port": str(free_port()),
        "gateway_sim__db_path": str(home.resolve() / "gateway-sim.sqlite3"),
        # Two instances of a role would clash on one metrics port, and so would a dev stack's.
        "metrics__enabled": "false",
        "secrets__key": generate_key(),
        **(extra or {}),
    }
    # The cluster's passwords, made now (under the stack's home) so that the URLs can carry them.
    shaped = Settings(**_nested(flat))
    passwords = credentials.postgres_passwords(shaped)
    for role in DATABASE_ROLES:
        flat[f"database__urls__{role}"] = _url(shaped, role_name(role), passwords)
    flat["database__admin_url"] = _url(shaped, postgres.SUPERUSER, passwords)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPAY_")}
    env |= {f"FLOWPAY_{key.upper()}": value for key, value in flat.items()}
    settings = Settings(**_nested(flat))
    found = {f"database password of {user}": password for user, password in passwords.items()}
    return ChaosStack(home.resolve(), settings, env, found | {"secrets key": flat["secrets__key"]})


def _url(settings: Settings, user: str, passwords: dict[str, str]) -> str:
    """The stack's URL for ``user`` (every server of it), its password in it rather than in a
    password file: the scenario hunts for it in the logs."""
    return make_conninfo(dev_url(settings, user), password=passwords[user], passfile=None)


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
    init_database(stack.settings)


def start_postgres(stack: ChaosStack) -> None:
    (pg_standby.up if stack.settings.dev.pg_standby else postgres.up)(stack.settings)


def stop_postgres(stack: ChaosStack) -> None:
    """A fast shutdown: clients are disconnected, open transactions rolled back."""
    (pg_standby.down if stack.settings.dev.pg_standby else postgres.down)(stack.settings)


def start_kafka(stack: ChaosStack) -> None:
    kafka.up(stack.settings)


def kill_kafka(stack: ChaosStack) -> None:
    """SIGKILL every Kafka node at once."""
    for node in kafka.nodes(stack.settings):
        kafka.kill_node(stack.settings, node.id)


def kill_kafka_leader(stack: ChaosStack) -> int:
    """SIGKILL the node that leads the most partitions of the payments topic; its id."""
    led = cluster.partitions(stack.settings, topics(stack.settings).payments)
    victim = cluster.busiest_leader(led) or 1
    kafka.kill_node(stack.settings, victim)
    return victim


def restore_kafka_node(stack: ChaosStack, node_id: int) -> None:
    """Start a killed node again; return once every partition has all its replicas in sync."""
    kafka.start_node(stack.settings, node_id)
    named = topics(stack.settings)
    cluster.wait_in_sync(stack.settings, [named.payments, named.dead_letters], 180)


def kill_pg_primary(stack: ChaosStack) -> str:
    """SIGKILL the PostgreSQL primary and its keeper: the monitor promotes the standby."""
    lead = pg_standby.primary(pg_standby.status(stack.settings))
    if lead is None:
        raise StackError("no PostgreSQL primary to kill")
    pg_standby.kill(stack.settings, lead.name)
    return lead.name


def restore_pg_node(stack: ChaosStack, name: str) -> None:
    """Start a killed server again; return once it is the new primary's standby, in sync."""
    pg_standby.start(stack.settings, name)
    pg_standby.wait_settled(stack.settings, 180)


def stop(stack: ChaosStack) -> None:
    # The brokers' data is the scenario's own and never reused, so there is no need to wait out
    # a controlled shutdown.
    kill_kafka(stack)
    stop_postgres(stack)
