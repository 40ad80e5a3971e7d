"""FlowPay's long-running roles and the supervisor that keeps them running under ``flowpay dev``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from workers.core.config import Settings
from workers.devstack.demo import LOCAL_RECEIVER_ENV
from workers.devstack.paths import StackPaths
from workers.devstack.procs import alive, read_pid, spawn, terminate

log = logging.getLogger(__name__)

SUPERVISOR_MARKER = "dev supervise"


@dataclass(frozen=True)
class Role:
    name: str
    argv: tuple[str, ...]  # the flowpay subcommand that runs it


# Each service adds its role here once `flowpay <command>` runs it.
ROLES: tuple[Role, ...] = (
    Role("api", ("serve-api",)),
    Role("outbox", ("run-outbox",)),
    Role("gateway-sim", ("serve-gateway-sim",)),
    Role("processor", ("run-processor",)),
    Role("ledger", ("run-ledger",)),
    Role("notifier", ("run-notifier",)),
    Role("webhook-sink", ("dev", "sink")),
)


def flowpay_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "flowpay_cli", *args]


def role_marker(role: Role) -> str:
    return " ".join(role.argv)


def start_supervisor(settings: Settings, config_file: Path | None) -> int:
    """Start the supervisor unless it runs; returns its PID."""
    paths = StackPaths.of(settings)
    pid = read_pid(paths.supervisor_pid)
    if alive(pid, SUPERVISOR_MARKER) and pid is not None:
        return pid
    env = dict(os.environ)
    if config_file is not None:
        env["FLOWPAY_CONFIG"] = str(config_file.resolve())
    pid = spawn(flowpay_argv("dev", "supervise"), paths.supervisor_log, env=env)
    paths.supervisor_pid.write_text(f"{pid}\n")
    return pid


def stop_supervisor(settings: Settings) -> bool:
    """Stop the supervisor and, should it have died, any role it left behind."""
    paths = StackPaths.of(settings)
    pid = read_pid(paths.supervisor_pid)
    stopped = pid is not None and terminate(pid, SUPERVISOR_MARKER, timeout_s=60)
    for role in ROLES:
        role_pid = role_pids(settings).get(role.name)
        if role_pid is not None:
            stopped |= terminate(role_pid, role_marker(role))
    return stopped


def role_pids(settings: Settings) -> dict[str, int]:
    try:
        data = json.loads(StackPaths.of(settings).roles_state.read_text())
    except (OSError, ValueError):
        return {}
    return {name: int(entry["pid"]) for name, entry in data.items()}


def supervise(settings: Settings, stop: threading.Event) -> None:
    """Run every role; restart one that dies, with backoff; stop them all when asked."""
    paths = StackPaths.of(settings)
    children: dict[str, subprocess.Popen[bytes]] = {}
    restarts: dict[str, int] = dict.fromkeys((r.name for r in ROLES), 0)
    next_start: dict[str, float] = dict.fromkeys((r.name for r in ROLES), 0.0)
    try:
        while not stop.is_set():
            for role in ROLES:
                child = children.get(role.name)
                if child is not None and child.poll() is None:
                    continue
                if child is not None:
                    log.warning("%s exited with %s; restarting", role.name, child.returncode)
                    restarts[role.name] += 1
                    next_start[role.name] = time.monotonic() + min(2 ** restarts[role.name], 30)
                    del children[role.name]
                if time.monotonic() >= next_start[role.name]:
                    children[role.name] = _start(role, paths, role_env(settings))
                    _record(paths, children, restarts)
            stop.wait(0.5)
    finally:
        for name, child in children.items():
            log.info("stopping %s (pid %d)", name, child.pid)
            terminate(child.pid, role_marker(next(r for r in ROLES if r.name == name)))
        paths.roles_state.unlink(missing_ok=True)


def role_env(settings: Settings) -> dict[str, str]:
    """The roles' environment: JSON log lines, unless the configuration names a format."""
    chosen = "json" if settings.log_format == "auto" else settings.log_format
    return {**os.environ, "FLOWPAY_LOG_FORMAT": chosen, **LOCAL_RECEIVER_ENV}


def _start(role: Role, paths: StackPaths, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_file = paths.role_log(role.name)
    with log_file.open("ab") as out:
        return subprocess.Popen(
            flowpay_argv(*role.argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _record(
    paths: StackPaths, children: dict[str, subprocess.Popen[bytes]], restarts: dict[str, int]
) -> None:
    state = {
        name: {"pid": child.pid, "restarts": restarts[name]} for name, child in children.items()
    }
    tmp = paths.roles_state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(paths.roles_state)
