"""The whole local stack: bring it up, take it down, say how it is."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from workers.core.config import Settings
from workers.core.db import apply_schema, connect, database_url
from workers.core.errors import StackError
from workers.core.kafka import bootstrap_servers, create_topics
from workers.core.logs import mask_conninfo
from workers.devstack import demo, kafka, postgres, roles
from workers.devstack.paths import StackPaths
from workers.devstack.procs import alive, read_pid, tail

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Component:
    name: str
    state: str  # running | stopped | external
    pid: int | None
    endpoint: str
    log: str


def up(settings: Settings, *, infra_only: bool, config_file: Path | None, say: Progress) -> None:
    """Start whatever is not running; reuse what is. Safe to run any number of times."""
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
        say("API")
        wait_http(
            f"{api_url(settings)}/readyz",
            settings.dev.start_timeout_s,
            StackPaths.of(settings).role_log("api"),
        )


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


def init_database(settings: Settings) -> None:
    try:
        with connect(settings) as conn:
            apply_schema(conn)
    except Exception as exc:
        if isinstance(exc, StackError):
            raise
        raise StackError(f"cannot apply the schema: {exc}") from None


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
    paths = StackPaths.of(settings)
    components = [_postgres(settings), _kafka(settings)]
    supervisor_pid = read_pid(paths.supervisor_pid)
    components.append(
        _process("supervisor", supervisor_pid, roles.SUPERVISOR_MARKER, "", paths.supervisor_log)
    )
    pids = roles.role_pids(settings)
    for role in roles.ROLES:
        components.append(
            _process(
                role.name,
                pids.get(role.name),
                roles.role_marker(role),
                _endpoint(settings, role.name),
                paths.role_log(role.name),
            )
        )
    return components


def _process(name: str, pid: int | None, marker: str, endpoint: str, log: Path) -> Component:
    running = alive(pid, marker)
    return Component(name, _state(running), pid if running else None, endpoint, str(log))


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


def _kafka(settings: Settings) -> Component:
    if settings.kafka.bootstrap_servers is not None:
        return Component("kafka", "external", None, bootstrap_servers(settings), "")
    status_ = kafka.status(settings)
    return Component(
        "kafka", _state(status_.running), status_.pid, status_.bootstrap_servers, str(status_.log)
    )


def _endpoint(settings: Settings, role: str) -> str:
    return {"api": api_url(settings), "gateway-sim": gateway_sim_url(settings)}.get(role, "")


def gateway_sim_url(settings: Settings) -> str:
    return f"http://{settings.gateway_sim.host}:{settings.gateway_sim.port}"


def _state(running: bool) -> str:
    return "running" if running else "stopped"


def _redacted_url(settings: Settings) -> str:
    """The database URL without its password: status output must never show a secret."""
    return mask_conninfo(database_url(settings))
