"""The whole local stack: bring it up, take it down, say how it is."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from workers.core.config import Settings
from workers.core.db import database_url
from workers.core.errors import StackError
from workers.core.kafka import bootstrap_servers, create_topics
from workers.core.logs import mask_conninfo
from workers.devstack import demo, health, kafka, postgres, roles
from workers.devstack.paths import StackPaths
from workers.devstack.procs import tail
from workers.devstack.sink import sink_url
from workers.migrations.runner import Migration, migrate

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
    if settings.database.url is None:
        say("PostgreSQL")
        postgres.up(settings)
    say("schema")
    init_database(settings)
    if settings.kafka.bootstrap_servers is None:
        say("Kafka")
        kafka.up(settings)
    say("topics")
    create_topics(settings)
    if not infra_only:
        say("demo merchant")
        demo.ensure_demo_merchant(settings)
        say("roles")
        roles.start_supervisor(settings, config_file)
        health.wait_ready(settings, wait_s, lambda step: say(f"roles: {step}"))


def wait_http(url: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(
        f"{url} did not answer within {timeout_s:.0f}s; last lines of {log}:\n{tail(log)}"
    )


def init_database(settings: Settings) -> list[Migration]:
    """Bring the database's schema up to date; returns the migrations applied."""
    return migrate(database_url(settings))


def down(settings: Settings) -> list[str]:
    """Stop what the stack started, by recorded PIDs; returns the names of what was stopped."""
    stopped = []
    if roles.stop_supervisor(settings):
        stopped.append("roles")
    if settings.kafka.bootstrap_servers is None and kafka.down(settings):
        stopped.append("kafka")
    if settings.database.url is None and postgres.down(settings):
        stopped.append("postgres")
    return stopped


def status(settings: Settings) -> list[Component]:
    infra = [_postgres(settings), *_kafka(settings), _supervisor(settings)]
    return infra + [_role(settings, name, h) for name, h in health.role_health(settings).items()]


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
        "gateway_sim_url": gateway_sim_url(settings),
        "logs": str(StackPaths.of(settings).logs),
    }


def api_url(settings: Settings) -> str:
    return settings.api.base_url or f"http://{settings.api.host}:{settings.api.port}"


def as_json(settings: Settings) -> dict[str, Any]:
    return {
        "components": [asdict(c) for c in status(settings)],
        "endpoints": endpoints(settings),
    }


def _postgres(settings: Settings) -> Component:
    if settings.database.url is not None:
        return Component("postgres", "external", None, _redacted_url(settings), "")
    pg = postgres.status(settings)
    return Component("postgres", _state(pg.running), pg.pid, _redacted_url(settings), str(pg.log))


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
    """The database URL without its password: status output must never show a secret."""
    return mask_conninfo(database_url(settings))
