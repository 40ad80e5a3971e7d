"""The whole local stack: bring it up, take it down, say how it is."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import connect, database_url
from workers.core.errors import StackError
from workers.core.kafka import bootstrap_servers, create_topics
from workers.core.logs import mask_conninfo
from workers.core.sealing import keyring
from workers.devstack import (
    cluster,
    credentials,
    demo,
    health,
    kafka,
    pg_standby,
    postgres,
    roles,
    shape,
)
from workers.devstack.paths import StackPaths
from workers.devstack.procs import tail
from workers.devstack.sink import sink_url
from workers.migrations import setup
from workers.migrations.runner import Migration, migrate
from workers.notifier.endpoint_secrets import rotate

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Component:
    name: str
    state: str  # running | unhealthy | conflict | stopped | external
    pid: int | None
    endpoint: str
    log: str
    detail: str = ""  # why it is not running, or who holds its port


def up(
    settings: Settings,
    *,
    infra_only: bool,
    config_file: Path | None,
    say: Progress,
    wait_s: float = 60.0,
) -> None:
    """Start whatever is not running; reuse what is. Safe to run any number of times.

    With the roles, returns only once every role answers its health check (within ``wait_s``),
    else raises ``health.NotReady``. Whatever a SIGKILL left of the stack is stopped first, so
    that exactly one instance of each role runs.
    """
    StackPaths.of(settings).logs.mkdir(parents=True, exist_ok=True)
    _same_shape(settings)
    shape.record(settings)
    if settings.database.local:
        say("PostgreSQL" + (" and its standby" if settings.dev.pg_standby else ""))
        (pg_standby.up if settings.dev.pg_standby else postgres.up)(settings)
        credentials.ensure_secrets_key(settings)
    say("schema")
    init_database(settings)
    if settings.database.local:
        say("secrets")
        seal_plain_secrets(settings)
    _kafka_up(settings, say)
    say("topics")
    create_topics(settings)
    if not infra_only:
        say("demo merchant")
        demo.ensure_demo_merchant(settings)
        say("roles")
        roles.start_supervisor(settings, config_file)
        health.wait_ready(settings, wait_s, lambda step: say(f"roles: {step}"))


def _kafka_up(settings: Settings, say: Progress) -> None:
    if settings.kafka.bootstrap_servers is None:
        brokers = settings.dev.kafka_brokers
        say("Kafka" if brokers == 1 else f"Kafka ({brokers} nodes)")
        kafka.up(settings)


def _same_shape(settings: Settings) -> None:
    """Refuse another shape while the recorded one runs: its servers hold the same ports."""
    before = shape.recorded(settings)
    if before is None or before == shape.Shape.of(settings):
        return
    was = settings.model_copy(update={"dev": settings.dev.model_copy(update=asdict(before))})
    if any(c.state == "running" for c in _infra(was)):
        raise StackError(
            f"the stack runs as {_described(before)}, not {_described(shape.Shape.of(settings))}:"
            " run flowpay dev down first"
        )


def _described(made: shape.Shape) -> str:
    brokers = f"{made.kafka_brokers} Kafka node" + ("s" if made.kafka_brokers > 1 else "")
    return brokers + (" and a PostgreSQL standby" if made.pg_standby else "")


def wait_http(url: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if local_http.client().get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(
        f"{url} did not answer within {timeout_s:.0f}s; last lines of {log}:\n{tail(log)}"
    )


def init_database(settings: Settings) -> list[Migration]:
    """Bring the database up to date; returns the migrations applied.

    The stack's own cluster gets `flowpay db init` (roles, access, migrations); a database of
    someone else's only the migrations: its roles are its administrator's (`flowpay db init`).
    """
    if settings.database.local:
        return setup.init_database(settings)
    return migrate(database_url(settings, "owner"))


def seal_plain_secrets(settings: Settings) -> int:
    """Seal the secrets stored before encryption (as `flowpay secrets rotate` would)."""
    with connect(settings, "notifier") as conn:
        return rotate(conn, keyring(settings), lambda _n: None)


def down(settings: Settings) -> list[str]:
    """Stop what the stack started, by recorded PIDs; returns the names of what was stopped."""
    stopped = []
    if roles.stop_supervisor(settings):
        stopped.append("roles")
    if settings.kafka.bootstrap_servers is None and kafka.down(settings):
        stopped.append("kafka")
    if settings.database.local:
        down_pg = pg_standby.down if settings.dev.pg_standby else postgres.down
        if down_pg(settings):
            stopped.append("postgres")
    return stopped


def status(settings: Settings) -> list[Component]:
    infra = [*_infra(settings), _supervisor(settings)]
    return infra + [_role(settings, name, h) for name, h in health.role_health(settings).items()]


def _infra(settings: Settings) -> list[Component]:
    return [*_postgres(settings), *_kafka(settings)]


def _role(settings: Settings, name: str, role: health.RoleHealth) -> Component:
    log = str(StackPaths.of(settings).role_log(name))
    return Component(name, role.state, role.pid, _endpoint(settings, name), log, role.detail)


def _supervisor(settings: Settings) -> Component:
    pid = roles.live_supervisor(settings)
    left = len(roles.strays(settings))
    detail = f"{left} processes of the stack outside it: dev up or dev down stops them"
    return Component(
        "supervisor",
        _state(pid is not None),
        pid,
        "",
        str(StackPaths.of(settings).supervisor_log),
        detail if left else "",
    )


def endpoints(settings: Settings) -> dict[str, str]:
    return {
        "database_url": _redacted_url(settings),
        "kafka_bootstrap_servers": bootstrap_servers(settings),
        "api_url": api_url(settings),
        # The example checkout page (workers/api/checkout_page.py), with what it needs to know.
        "checkout_page_url": api_url(settings) + "/checkout#payment=<id>&client_secret=<secret>",
        "gateway_sim_url": gateway_sim_url(settings),
        "logs": str(StackPaths.of(settings).logs),
    }


def api_url(settings: Settings) -> str:
    return settings.api.base_url or f"http://{settings.api.host}:{settings.api.port}"


def as_json(settings: Settings) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "components": [asdict(c) for c in status(settings)],
        "endpoints": endpoints(settings),
    }
    view = kafka_cluster(settings)
    if view is not None:
        shown["kafka_cluster"] = asdict(view)
    return shown


def kafka_cluster(settings: Settings) -> cluster.ClusterView | None:
    """The local Kafka cluster's quorum and payment partitions; None for a lone or external
    broker."""
    if settings.kafka.bootstrap_servers is not None or settings.dev.kafka_brokers == 1:
        return None
    return cluster.view(settings)


def _postgres(settings: Settings) -> list[Component]:
    if not settings.database.local:
        return [Component("postgres", "external", None, _redacted_url(settings), "")]
    if not settings.dev.pg_standby:
        pg = postgres.status(settings)
        url = _redacted_url(settings)
        return [Component("postgres", _state(pg.running), pg.pid, url, str(pg.log))]
    watching, pid = pg_standby.monitor_running(settings)
    watcher = pg_standby.monitor(settings)
    monitor = Component(
        "pg-monitor", _state(watching), pid, f"127.0.0.1:{watcher.port}", str(watcher.log),
        "pg_auto_failover's monitor",
    )  # fmt: skip
    return [
        Component(
            f"postgres-{node.name.removeprefix('node-')}",
            _state(node.running),
            node.pid,
            f"127.0.0.1:{node.port}",
            str(node.log),
            node.role,
        )
        for node in pg_standby.status(settings)
    ] + [monitor]


def _kafka(settings: Settings) -> list[Component]:
    if settings.kafka.bootstrap_servers is not None:
        return [Component("kafka", "external", None, bootstrap_servers(settings), "")]
    nodes = kafka.status(settings)
    return [
        Component(
            "kafka" if len(nodes) == 1 else f"kafka-{node.node}",
            _state(node.running),
            node.pid,
            node.bootstrap_servers,
            str(node.log),
        )
        for node in nodes
    ]


def _endpoint(settings: Settings, name: str) -> str:
    """Where the role serves; for a consumer role, its metrics."""
    servers = {
        "api": api_url(settings),
        "gateway-sim": gateway_sim_url(settings),
        "webhook-sink": sink_url(settings),
    }
    if name in servers:
        return servers[name]
    role = next(r for r in roles.ROLES if r.name == name)
    address = role.address(settings)
    return "" if address is None else health.health_url(role, address)


def gateway_sim_url(settings: Settings) -> str:
    return f"http://{settings.gateway_sim.host}:{settings.gateway_sim.port}"


def _state(running: bool) -> str:
    return "running" if running else "stopped"


def _redacted_url(settings: Settings) -> str:
    """The operator's database URL without its password: output must never show a secret."""
    return mask_conninfo(database_url(settings, "operator"))
