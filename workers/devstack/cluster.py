"""The local Kafka cluster as an operator sees it: the quorum's leader, and each partition's
leader and in-sync replicas.

The quorum's leader comes from each running node's ``quorum-state`` file (what the node last
persisted of the election: leader and epoch), the newest epoch winning: Kafka's clients cannot
ask it (in KRaft, the controller a metadata answer names is any broker), and the metadata
quorum tool would pull in the whole of ``kafka-tools``. Partitions come from a metadata request.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from workers.core.config import Settings
from workers.core.errors import StackError
from workers.core.kafka import KafkaException, make_admin
from workers.core.topics import topics
from workers.devstack import kafka
from workers.devstack.procs import alive, read_pid

QUORUM_STATE = Path("__cluster_metadata-0") / "quorum-state"


@dataclass(frozen=True)
class Quorum:
    leader: int | None  # None: an election is under way, or no node runs
    epoch: int
    voters: tuple[int, ...]


@dataclass(frozen=True)
class PartitionState:
    partition: int
    leader: int  # -1: none (no replica in sync is alive)
    replicas: tuple[int, ...]
    in_sync: tuple[int, ...]


@dataclass(frozen=True)
class ClusterView:
    quorum: Quorum
    topic: str
    partitions: list[PartitionState]
    error: str = ""  # why the partitions are not known (no broker answers)


def view(settings: Settings) -> ClusterView:
    """The quorum and every partition of the payments topic, as ``dev status`` shows them."""
    topic = topics(settings).payments
    try:
        found = partitions(settings, topic)
    except StackError as exc:
        return ClusterView(quorum(settings), topic, [], str(exc))
    return ClusterView(quorum(settings), topic, found)


def read_quorum_state(text: str) -> Quorum:
    """One node's persisted view of the election."""
    state = json.loads(text)
    leader = int(state.get("leaderId", -1))
    voters = tuple(sorted(int(v["voterId"]) for v in state.get("currentVoters") or []))
    return Quorum(leader if leader >= 0 else None, int(state.get("leaderEpoch", 0)), voters)


def newest(views: Iterable[Quorum]) -> Quorum:
    """The view of the latest epoch: older ones may name a leader since replaced."""
    return max(views, key=lambda q: q.epoch, default=Quorum(None, 0, ()))


def quorum(settings: Settings) -> Quorum:
    """The quorum's leader as the running nodes last recorded it."""
    views = []
    for node in kafka.nodes(settings):
        if not alive(read_pid(node.pid_file), kafka.MAIN_CLASS):
            continue
        try:
            views.append(read_quorum_state((node.data / QUORUM_STATE).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a node still starting has not written it yet
    return newest(views)


def partitions(settings: Settings, topic: str) -> list[PartitionState]:
    """Every partition of ``topic``: its leader, replicas and in-sync replicas."""
    try:
        metadata = make_admin(settings, quiet=True).list_topics(topic, timeout=5)
    except KafkaException as exc:
        raise StackError(f"Kafka did not describe {topic}: {exc.args[0].str()}") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return []
    return [
        PartitionState(p.id, p.leader, tuple(p.replicas), tuple(sorted(p.isrs)))
        for p in sorted(described.partitions.values(), key=lambda p: p.id)
    ]


def busiest_leader(states: Iterable[PartitionState]) -> int | None:
    """The node leading the most partitions (the lowest id among equals); None if none leads."""
    counts = Counter(s.leader for s in states if s.leader >= 0)
    if not counts:
        return None
    return min(counts, key=lambda node: (-counts[node], node))


def fully_in_sync(states: Iterable[PartitionState]) -> bool:
    return all(s.leader >= 0 and set(s.in_sync) == set(s.replicas) for s in states)


def wait_in_sync(settings: Settings, topics: Iterable[str], timeout_s: float) -> None:
    """Return once every replica of every partition of ``topics`` is in sync again."""
    names = list(topics)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if all(fully_in_sync(partitions(settings, t)) for t in names):
                return
        except StackError:
            pass  # a cluster between leaders: look again
        if time.monotonic() > deadline:
            raise StackError(f"{', '.join(names)} not fully in sync within {timeout_s:.0f}s")
        time.sleep(0.3)
