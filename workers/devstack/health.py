"""Is each role of the local stack up? Its process, who holds its port, and its health check.

A role is ``running`` only when its recorded process runs, the port it serves (its server's,
else its metrics') is held by that process or its children and nobody else, and its health
check answers: ``GET /readyz`` (api), ``/healthz`` (gateway-sim), ``/metrics`` (the consumer
roles), a listening socket (webhook-sink). Another process on its port is a ``conflict``,
reported with that process's PID: the role cannot serve there, whatever answers in its place.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from workers.core import local_http
from workers.core.config import Settings
from workers.core.errors import StackError
from workers.devstack import roles
from workers.devstack.paths import StackPaths
from workers.devstack.procs import (
    Listeners,
    alive,
    descendants,
    describe,
    how_ended,
    listeners,
    read_pid,
    tail,
)
from workers.devstack.roles import Address, Recorded, Role

LOG_LINES = 10
CRASH_LOOP = 3  # exits during one wait that make a role's failure certain, not a slow start


class NotReady(StackError):
    """A role did not come up: `flowpay dev up` exits 1 with this message."""


@dataclass(frozen=True)
class RoleHealth:
    state: str  # running | unhealthy | conflict | stopped
    pid: int | None  # the role's; for a conflict, the process holding its port
    detail: str
    exits: int = 0  # since the supervisor started


def role_health(settings: Settings) -> dict[str, RoleHealth]:
    """Every role's health, from one look at the machine's listening ports."""
    listening = listeners()
    records = roles.recorded(settings)
    return {
        role.name: check(settings, role, records.get(role.name, Recorded(None, 0)), listening)
        for role in roles.ROLES
    }


def check(settings: Settings, role: Role, record: Recorded, listening: Listeners) -> RoleHealth:
    running = roles.runs(settings, record.pid, roles.role_marker(role))
    mine = descendants(record.pid) if running and record.pid is not None else set()
    address = role.address(settings)
    holders = listening.get(address[1], set()) if address is not None else set()
    foreign = sorted(holders - mine, key=lambda pid: (pid is None, pid))
    if address is not None and foreign:
        holder = foreign[0]
        what = f"port {address[1]} is held by {describe(holder)}, not by the stack's {role.name}"
        return RoleHealth("conflict", holder, what)
    if not running or record.pid is None:
        exits = f"; it exited {record.restarts} times" if record.restarts else ""
        return RoleHealth("stopped", None, f"not running{exits}", record.restarts)
    if address is None:
        return RoleHealth("running", record.pid, "no health check: its metrics are off")
    if not holders:
        return RoleHealth("unhealthy", record.pid, f"nothing listens on port {address[1]} yet")
    problem = _ask(role, address)
    return RoleHealth("unhealthy" if problem else "running", record.pid, problem or "")


def health_url(role: Role, address: Address) -> str:
    host, port = address
    if _unspecified(host):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{role.health_path or ''}"


def _ask(role: Role, address: Address) -> str | None:
    """What is wrong with the role's answer to its health check; None when all is well."""
    if role.health_path is None:
        return None
    url = health_url(role, address)
    try:
        status = local_http.client().get(url, timeout=2.0).status_code
    except httpx.HTTPError as exc:
        return f"GET {url}: {exc or type(exc).__name__}"
    return None if status == 200 else f"GET {url}: HTTP {status}"


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def wait_ready(settings: Settings, wait_s: float, say: Callable[[str], None]) -> None:
    """Return once every role is ``running``; raise NotReady naming those that are not.

    Gives up at once when a role's port is held by a process outside the stack: it will not
    let go by itself; and when a role has exited ``CRASH_LOOP`` times during the wait: it
    exits at every start. Otherwise the supervisor keeps restarting a failing role after this.
    """
    deadline = time.monotonic() + wait_s
    exits_before = {name: r.restarts for name, r in roles.recorded(settings).items()}
    while True:
        ended = _supervisor_ended(settings)
        if ended is not None:
            log = StackPaths.of(settings).supervisor_log
            raise NotReady(f"the supervisor {ended}; last lines of {log}:\n{tail(log)}")
        down = {n: h for n, h in role_health(settings).items() if h.state != "running"}
        if not down:
            return
        taken = {
            name: health
            for name, health in down.items()
            if health.state == "conflict" and outsider(settings, health.pid)
        }
        if taken:
            raise NotReady(_explain(settings, taken, ""))
        looping = {
            name: health
            for name, health in down.items()
            if health.exits - exits_before.get(name, 0) >= CRASH_LOOP
        }
        if looping:
            raise NotReady(_explain(settings, looping, ""))
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotReady(_explain(settings, down, f" within {wait_s:.0f}s"))
        say(f"waiting for {', '.join(down)} ({left:.0f}s left)")
        time.sleep(0.5)


def _supervisor_ended(settings: Settings) -> str | None:
    """How the stack's supervisor ended; None while it runs.

    `dev up` started it, so it can say how: a signal, or an exit code. A recorded PID that
    runs something else now means it ended too.
    """
    pid = read_pid(StackPaths.of(settings).supervisor_pid)
    if pid is None:
        return "is not running"
    if roles.runs(settings, pid, roles.SUPERVISOR_MARKER):
        return None
    return how_ended(pid) or "is not running"


def outsider(settings: Settings, pid: int | None) -> bool:
    """A process that holds a role's port and will not let go by itself (it may have, already)."""
    if pid is None:
        return True  # a process of another user: not the stack's
    return alive(pid, "") and not roles.is_stack_process(settings, pid)


def _explain(settings: Settings, down: dict[str, RoleHealth], within: str) -> str:
    """One line naming the roles and why, then the last lines of each one's log."""
    if len(down) == 1:
        [(name, health)] = down.items()
        why = health.detail
    else:
        why = "; ".join(f"{name}: {health.detail}" for name, health in down.items())
    lines = [f"{', '.join(down)} did not come up{within}: {why}"]
    for name in down:
        log = StackPaths.of(settings).role_log(name)
        lines += [f"last lines of {log}:", tail(log, LOG_LINES)]
    return "\n".join(lines)
