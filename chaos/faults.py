"""The faults, and the seeded schedule that orders them.

Each fault returns once it is over: the killed process restarted, the broker or the database
started again, the simulator's fault flags cleared, the receiver healthy again. What follows
(the recovery) is the scenario's to measure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from chaos import stack as stack_
from chaos.receiver import FAILING, HANGING, HEALTHY, Receiver
from chaos.roles import KILLABLE, Roles
from workers.core import local_http

# A rate high enough that most charges in the window meet the fault.
GATEWAY_FAULTS = {
    "gateway-timeout": "timeout_rate",
    "gateway-lost-ack": "lost_ack_rate",
    "gateway-5xx": "error_rate",
}
GATEWAY_RATE = 0.5
WEBHOOK_FAULTS = {"webhook-fails": FAILING, "webhook-hangs": HANGING}
KINDS: tuple[str, ...] = (
    *(f"kill {role}" for role in KILLABLE),
    "kill kafka",
    "restart postgres",
    *GATEWAY_FAULTS,
    *WEBHOOK_FAULTS,
)
# Scale-out only: one more processor and ledger join their groups, then leave again.
REBALANCE = "rebalance"
# On a cluster only (three brokers, a PostgreSQL standby): a lost machine, which FlowPay rides
# out on the servers left. Recovery is measured from the kill; the victim is started again
# after it.
KILL_KAFKA_LEADER = "kill kafka leader"
KILL_PG_PRIMARY = "kill postgres primary"
FAILOVERS: tuple[str, ...] = (KILL_KAFKA_LEADER, KILL_PG_PRIMARY)


def schedule(kinds: tuple[str, ...], rounds: int, seed: int) -> list[str]:
    """Every kind ``rounds`` times, each round in a seeded random order."""
    rng = random.Random(f"faults-{seed}")
    order: list[str] = []
    for _ in range(rounds):
        batch = list(kinds)
        rng.shuffle(batch)
        order.extend(batch)
    return order


@dataclass
class Injector:
    stack: stack_.ChaosStack
    roles: Roles
    receiver: Receiver
    seed: int
    window_s: float = 3.0  # how long a gateway or webhook fault lasts, and Kafka stays down

    def __post_init__(self) -> None:
        self.rng = random.Random(f"victims-{self.seed}")

    def inject(self, kind: str) -> Callable[[], None]:
        """Inject the fault; returns what mends what it left broken (nothing for most)."""
        if kind == KILL_KAFKA_LEADER:
            node = stack_.kill_kafka_leader(self.stack)
            return lambda: stack_.restore_kafka_node(self.stack, node)
        if kind == KILL_PG_PRIMARY:
            name = stack_.kill_pg_primary(self.stack)
            return lambda: stack_.restore_pg_node(self.stack, name)
        self._action(kind)()
        return lambda: None

    def _action(self, kind: str) -> Callable[[], None]:
        if kind.startswith("kill ") and kind != "kill kafka":
            return lambda: self.kill_role(kind.removeprefix("kill "))
        if kind in GATEWAY_FAULTS:
            return lambda: self.gateway(GATEWAY_FAULTS[kind])
        if kind in WEBHOOK_FAULTS:
            return lambda: self.webhooks(WEBHOOK_FAULTS[kind])
        return {
            "kill kafka": self.kafka,
            "restart postgres": self.postgres,
            REBALANCE: self.rebalance,
        }[kind]

    def kill_role(self, role: str) -> None:
        """SIGKILL one instance of the role (its whole process tree), then start it again."""
        victim = self.rng.choice(self.roles.of(role))
        victim.kill()
        victim.start(self.stack.env)

    def kafka(self) -> None:
        stack_.kill_kafka(self.stack)
        time.sleep(self.window_s)
        stack_.start_kafka(self.stack)

    def postgres(self) -> None:
        stack_.stop_postgres(self.stack)
        stack_.start_postgres(self.stack)

    def gateway(self, flag: str) -> None:
        self._sim_faults({flag: GATEWAY_RATE})
        time.sleep(self.window_s)
        self._sim_faults({flag: 0.0})

    def webhooks(self, mode: str) -> None:
        self.receiver.mode = mode
        time.sleep(self.window_s)
        self.receiver.mode = HEALTHY

    def rebalance(self) -> None:
        """One more processor and ledger join their groups mid-flight, then leave again."""
        joined = [self.roles.add(role, KILLABLE[role]) for role in ("run-processor", "run-ledger")]
        time.sleep(self.window_s * 2)
        for instance in joined:
            self.roles.remove(instance)

    def _sim_faults(self, flags: dict[str, float]) -> None:
        response = local_http.client().post(
            f"{self.stack.sim_url}/_sim/faults", json=flags, timeout=10
        )
        response.raise_for_status()
