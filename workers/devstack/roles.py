"""FlowPay's long-running roles and the supervisor that keeps them running under ``flowpay dev``.

No process of the stack outlives its supervisor, whatever kills what:
- each role gets SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), and its own children
  (serve-api's server processes) get SIGTERM when it dies (``exit_with_parent``);
- every process of the stack has ``FLOWPAY_DEVSTACK=<dev.home>`` in its environment, by which
  ``dev up`` and ``dev down`` find whatever a SIGKILL left running, and stop it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from workers.core.config import MetricsSettings, Settings
from workers.core.lifecycle import signal_on_parent_death
from workers.devstack import shape
from workers.devstack.demo import LOCAL_RECEIVER_ENV
from workers.devstack.paths import StackPaths
from workers.devstack.procs import (
    alive,
    descendants,
    env_of,
    read_pid,
    spawn,
    stop_all,
    terminate,
    with_env,
)

log = logging.getLogger(__name__)

SUPERVISOR_MARKER = "dev supervise"
# The environment variable that marks a process as the stack's; its value is the stack's home.
STACK_ENV = "FLOWPAY_DEVSTACK"
# Beyond a role's grace period: how long its stop may take before SIGKILL.
STOP_MARGIN_S = 5.0

Address = tuple[str, int]


@dataclass(frozen=True)
class Role:
    name: str
    argv: tuple[str, ...]  # the flowpay subcommand that runs it
    # Where its health check asks: its server, else its metrics; None when it has no port.
    address: Callable[[Settings], Address | None]
    # A GET that answers 200 once the role works; None: listening on its port is enough.
    health_path: str | None = None


def _metrics(port_of: Callable[[MetricsSettings], int]) -> Callable[[Settings], Address | None]:
    def address(settings: Settings) -> Address | None:
        port = port_of(settings.metrics)
        return (settings.metrics.host, port) if settings.metrics.enabled and port else None

    return address


# Each service adds its role here once `flowpay <command>` runs it.
ROLES: tuple[Role, ...] = (
    Role("api", ("serve-api",), lambda s: (s.api.host, s.api.port), "/readyz"),
    Role("outbox", ("run-outbox",), _metrics(lambda m: m.outbox_port), "/metrics"),
    Role(
        "gateway-sim",
        ("serve-gateway-sim",),
        lambda s: (s.gateway_sim.host, s.gateway_sim.port),
        "/healthz",
    ),
    Role("processor", ("run-processor",), _metrics(lambda m: m.processor_port), "/metrics"),
    Role("ledger", ("run-ledger",), _metrics(lambda m: m.ledger_port), "/metrics"),
    Role(
        "orchestrator",
        ("run-orchestrator",),
        _metrics(lambda m: m.orchestrator_port),
        "/metrics",
    ),
    Role("notifier", ("run-notifier",), _metrics(lambda m: m.notifier_port), "/metrics"),
    Role("webhook-sink", ("dev", "sink"), lambda s: ("127.0.0.1", s.dev.sink_port)),
)


@dataclass(frozen=True)
class Recorded:
    """What the supervisor says of a role: its PID (None between restarts) and its restarts."""

    pid: int | None
    restarts: int


def flowpay_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "flowpay_cli", *args]


def role_marker(role: Role) -> str:
    return " ".join(role.argv)


def stack_id(settings: Settings) -> str:
    return str(StackPaths.of(settings).home)


def stop_timeout_s(settings: Settings) -> float:
    """How long a role gets to stop after SIGTERM before it is SIGKILLed."""
    return settings.worker.grace_period_s + STOP_MARGIN_S


def supervisor_grace_s(settings: Settings) -> float:
    """The supervisor's own grace period: long enough to stop every role first."""
    return stop_timeout_s(settings) + STOP_MARGIN_S


def live_supervisor(settings: Settings) -> int | None:
    pid = read_pid(StackPaths.of(settings).supervisor_pid)
    return pid if runs(settings, pid, SUPERVISOR_MARKER) else None


def runs(settings: Settings, pid: int | None, marker: str) -> bool:
    """True when ``pid`` is this stack's process running ``marker``.

    A recorded PID may since have gone to another stack's process of the same command line; its
    stack marker tells them apart (a process started before the stack had markers has none).
    """
    return alive(pid, marker) and env_of(pid or 0, STACK_ENV) in (stack_id(settings), None)


def start_supervisor(settings: Settings, config_file: Path | None) -> int:
    """Start the supervisor unless it runs; returns its PID.

    Whatever of the stack runs outside the supervisor's tree is stopped first, so that exactly
    one instance of each role runs after it.
    """
    paths = StackPaths.of(settings)
    stop_strays(settings)
    pid = live_supervisor(settings)
    if pid is not None:
        return pid
    env = {**os.environ, STACK_ENV: stack_id(settings), **shape.environment(settings)}
    if config_file is not None:
        env["FLOWPAY_CONFIG"] = str(config_file.resolve())
    pid = spawn(flowpay_argv("dev", "supervise"), paths.supervisor_log, env=env)
    paths.supervisor_pid.write_text(f"{pid}\n")
    return pid


def stop_supervisor(settings: Settings) -> bool:
    """Stop the supervisor (which stops its roles), then anything of the stack left running."""
    pid = live_supervisor(settings)
    stopped = pid is not None and terminate(
        pid, SUPERVISOR_MARKER, timeout_s=supervisor_grace_s(settings) + STOP_MARGIN_S
    )
    return stop_strays(settings) > 0 or stopped


def strays(settings: Settings) -> list[psutil.Process]:
    """The stack's processes outside the running supervisor's tree: what a SIGKILL left."""
    supervisor = live_supervisor(settings)
    kept = descendants(supervisor) if supervisor is not None else set()
    return [p for p in with_env(STACK_ENV, stack_id(settings)) if p.pid not in kept]


def stop_strays(settings: Settings) -> int:
    """Stop the stack's processes outside the running supervisor's tree; how many there were.

    Those at the top of what is left get SIGTERM. A role its dead supervisor already told to
    stop takes that as its second signal and exits at once, which is safe: every crash point is.
    """
    left = strays(settings)
    if left:
        log.warning("stopping %d processes of the stack left by a killed process", len(left))
        stop_all(left, stop_timeout_s(settings))
    return len(left)


def is_stack_process(settings: Settings, pid: int | None) -> bool:
    return pid is not None and env_of(pid, STACK_ENV) == stack_id(settings)


def recorded(settings: Settings) -> dict[str, Recorded]:
    try:
        data = json.loads(StackPaths.of(settings).roles_state.read_text())
        return {
            name: Recorded(entry["pid"], int(entry["restarts"])) for name, entry in data.items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def role_env(settings: Settings) -> dict[str, str]:
    """The roles' environment: JSON log lines, unless the configuration names a format."""
    chosen = "json" if settings.log_format == "auto" else settings.log_format
    return {
        **os.environ,
        "FLOWPAY_LOG_FORMAT": chosen,
        STACK_ENV: stack_id(settings),
        **LOCAL_RECEIVER_ENV,
    }


def supervise(settings: Settings, stop: threading.Event) -> None:
    """Run every role; restart one that dies, with backoff; stop them all when asked.

    Roles are started from this (the main) thread, which the parent-death signal watches.
    """
    paths = StackPaths.of(settings)
    slots = [_Slot(role, paths.role_log(role.name)) for role in ROLES]
    env = role_env(settings)
    try:
        while not stop.is_set():
            changed = [slot.tick(env) for slot in slots]
            if any(changed):
                _record(paths, slots)
            stop.wait(0.5)
    finally:
        _stop_roles(slots, stop_timeout_s(settings))
        paths.roles_state.unlink(missing_ok=True)


@dataclass
class _Slot:
    """One role under the supervisor: its running instance, or when to start the next."""

    role: Role
    log_file: Path
    child: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0

    def tick(self, env: dict[str, str]) -> bool:
        """Notice an exit, or start the role when due; True when its PID changed."""
        if self.child is not None:
            if self.child.poll() is None:
                return False
            log.warning("%s exited with %s; restarting", self.role.name, self.child.returncode)
            self._exited()
            return True
        if time.monotonic() < self.next_start:
            return False
        try:
            self.child = _start(self.role, self.log_file, env)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("cannot start %s: %s", self.role.name, exc)
            self._exited()
            return False
        return True

    def _exited(self) -> None:
        self.child = None
        self.restarts += 1
        self.next_start = time.monotonic() + min(2**self.restarts, 30)


def _start(role: Role, log_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as out:
        return subprocess.Popen(
            flowpay_argv(*role.argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=functools.partial(signal_on_parent_death, signal.SIGTERM, os.getpid()),
        )


def _stop_roles(slots: list[_Slot], stop_s: float) -> None:
    """SIGTERM every role at once; SIGKILL those still running after ``stop_s``."""
    running = {s.role.name: s.child for s in slots if s.child and s.child.poll() is None}
    for name, child in running.items():
        log.info("stopping %s (pid %d)", name, child.pid)
    stop_all([psutil.Process(child.pid) for child in running.values()], stop_s)
    for child in running.values():
        child.wait()


def _record(paths: StackPaths, slots: list[_Slot]) -> None:
    state = {
        slot.role.name: {
            "pid": slot.child.pid if slot.child is not None else None,
            "restarts": slot.restarts,
        }
        for slot in slots
    }
    tmp = paths.roles_state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(paths.roles_state)
