"""FlowPay's roles as processes the scenario starts, SIGKILLs, restarts, adds and removes.

Each instance runs in a session of its own, so a kill reaches the whole process tree (serve-api
with two workers is a parent and its server processes). Its output is appended to one log per
instance, across restarts, for the secrets scan.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from chaos.stack import ChaosStack
from workers.devstack.roles import flowpay_argv
from workers.devstack.stack import wait_http

# The roles the faults kill, by the name the report uses, and the command that runs each.
KILLABLE: dict[str, tuple[str, ...]] = {
    "serve-api": ("serve-api",),
    "run-outbox": ("run-outbox",),
    "run-processor": ("run-processor",),
    "run-ledger": ("run-ledger",),
    "run-orchestrator": ("run-orchestrator",),
    "run-notifier": ("run-notifier",),
}
SIM = "serve-gateway-sim"
START_TIMEOUT_S = 90.0


@dataclass
class Instance:
    name: str  # e.g. "run-processor#2"
    role: str
    argv: tuple[str, ...]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, env: dict[str, str]) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                flowpay_argv(*self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL the instance's whole process tree and reap it."""
        self.signal_tree(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it does not end in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.signal_tree(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_tree(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


@dataclass
class Roles:
    stack: ChaosStack
    instances: list[Instance] = field(default_factory=list)

    def add(self, role: str, argv: tuple[str, ...]) -> Instance:
        number = 1 + sum(1 for i in self.instances if i.role == role)
        name = f"{role}#{number}"
        instance = Instance(name, role, argv, self.stack.paths.logs / f"{name}.log")
        self.instances.append(instance)
        instance.start(self.stack.env)
        return instance

    def of(self, role: str) -> list[Instance]:
        return [i for i in self.instances if i.role == role and i.running()]

    def remove(self, instance: Instance) -> None:
        instance.stop()
        self.instances.remove(instance)

    def revive(self) -> list[str]:
        """Restart, as a supervisor would, any instance that exited by itself; say which did."""
        died = []
        for instance in self.instances:
            if instance.process is not None and not instance.running():
                died.append(f"{instance.name} exited by itself with {instance.process.returncode}")
                instance.start(self.stack.env)
        return died

    def logs(self) -> list[Path]:
        return sorted({i.log for i in self.instances} | set(self.stack.paths.logs.glob("*.log")))

    def stop_all(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every instance at once, then wait for each (SIGKILL past the timeout)."""
        for instance in self.instances:
            if instance.running():
                instance.signal_tree(signal.SIGTERM)
        for instance in self.instances:
            instance.stop(timeout_s)


def start_roles(stack: ChaosStack, *, scale_out: bool) -> Roles:
    """The simulator, then every role: one of each, or two (serve-api: two server processes)."""
    roles = Roles(stack)
    try:
        roles.add(SIM, (SIM, "--seed", "7"))
        wait_http(f"{stack.sim_url}/healthz", START_TIMEOUT_S, roles.of(SIM)[0].log)
        copies = 2 if scale_out else 1
        roles.add("serve-api", ("serve-api", "--workers", str(copies)))
        for role in (
            "run-outbox",
            "run-processor",
            "run-ledger",
            "run-orchestrator",
            "run-notifier",
        ):
            for _ in range(copies):
                roles.add(role, KILLABLE[role])
        wait_http(f"{stack.api_url}/readyz", START_TIMEOUT_S, roles.of("serve-api")[0].log)
    except BaseException:
        roles.stop_all()  # a failed start leaves no role running (they ran on past the test)
        raise
    return roles
