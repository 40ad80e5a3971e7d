"""`flowpay dev up --brokers 3 --pg-standby`: a three-node Kafka and a synchronous standby,
under the losses they are there to survive.

One such stack serves the whole session (the xdist workers share it: `shared_stack`), and its
tests take turns (a lock), since each kills or fails over part of it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]
from filelock import FileLock
from psycopg_pool import ConnectionPool

from tests.conftest import ROOT, flowpay, override
from tests.helpers.shared_stack import clean_env, shared_dir, shared_stack
from tests.helpers.waiting import wait_for
from workers.core.config import DatabaseRole, Settings, load_settings
from workers.core.db import database_url, make_pool
from workers.core.kafka import (
    Consumer,
    create_topics,
    make_admin,
    make_consumer,
    make_producer,
    produce_sync,
)
from workers.core.ports import free_ports
from workers.core.topics import topics
from workers.devstack import cluster, kafka, pg_standby, shape
from workers.devstack.paths import StackPaths

pytestmark = pytest.mark.timeout(600)
OWNER: DatabaseRole = "owner"  # the role that owns the schema: the test's table is its own


class Cluster:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.settings = shape.applied(load_settings(config))

    def cli(self, *args: str) -> str:
        done = flowpay("--config", str(self.config), *args, env=clean_env(), timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def _config(base: Settings, home: Path) -> dict[str, object]:
    kafka_port = free_ports(6)  # three nodes, a client and a controller port each
    return {
        "dev": {
            "home": str(home),
            "pg_port": free_ports(3),  # two servers and pg_auto_failover's monitor
            "kafka_port": kafka_port,
            "kafka_controller_port": kafka_port + 1,
            "kafka_home": str(StackPaths.of(base).kafka_dir),  # the jars already resolved
            "kafka_heap": "384m",
        },
        "kafka": {"partitions": 3, "session_timeout_ms": 6000},
        "metrics": {"enabled": False},
    }


@pytest.fixture(scope="session")
def shared(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[Cluster]:
    place = shared_dir(tmp_path_factory, worker_id, "cluster")
    # Not under /tmp/pytest-of-root, which every pytest session of the machine makes private
    # again: PostgreSQL's user must reach its data.
    home = ROOT / ".flowpay" / "test-cluster" / place.parent.name
    with shared_stack(
        place,
        lambda: _config(base_settings, home),
        ("--brokers", "3", "--pg-standby"),
        remove=home,
    ) as config:
        yield Cluster(config)


@pytest.fixture
def stack(shared: Cluster) -> Iterator[Cluster]:
    """The shared cluster, whole and in sync, to this test alone until it ends."""
    with FileLock(str(shared.config.with_name("turn.lock"))):
        pg_standby.wait_settled(shared.settings, 120)
        cluster.wait_in_sync(shared.settings, _topics(shared.settings), 120)
        yield shared


def _topics(settings: Settings) -> list[str]:
    named = topics(settings)
    return [named.payments, named.dead_letters]


def test_status_shows_each_broker_the_quorum_leader_and_each_partitions_isr(
    stack: Cluster,
) -> None:
    shown = json.loads(stack.cli("dev", "status", "--json"))

    running = {c["name"] for c in shown["components"] if c["state"] == "running"}
    assert {"kafka-1", "kafka-2", "kafka-3", "postgres-1", "postgres-2", "pg-monitor"} <= running
    roles = sorted(c["detail"] for c in shown["components"] if c["name"].startswith("postgres-"))
    assert roles == ["primary", "standby"]
    view = shown["kafka_cluster"]
    assert view["quorum"]["voters"] == [1, 2, 3]
    assert view["quorum"]["leader"] in (1, 2, 3)
    assert [p["partition"] for p in view["partitions"]] == [0, 1, 2]
    for partition in view["partitions"]:
        assert sorted(partition["replicas"]) == [1, 2, 3]
        assert partition["in_sync"] == [1, 2, 3]
        assert partition["leader"] in partition["replicas"]


def test_topics_keep_three_replicas_of_which_two_must_hold_a_write(stack: Cluster) -> None:
    payments = topics(stack.settings).payments
    resource = ConfigResource(ResourceType.TOPIC, payments)
    admin = make_admin(stack.settings)  # kept: its futures die with it
    described = admin.describe_configs([resource])[resource].result()

    assert described["min.insync.replicas"].value == "2"
    assert described["unclean.leader.election.enable"].value == "false"


def test_every_write_kafka_acknowledged_outlives_its_leaders_kill(stack: Cluster) -> None:
    settings = override(stack.settings, "kafka", topic_prefix=f"t{uuid.uuid4().hex[:12]}")
    create_topics(settings)
    topic = topics(settings).payments
    producer = make_producer(settings, "outbox")
    sent = [f"before-{n}".encode() for n in range(30)]
    for value in sent:
        produce_sync(producer, topic, key=value, value=value)
    victim = cluster.busiest_leader(cluster.partitions(settings, topic))
    assert victim is not None

    kafka.kill_node(settings, victim)
    # The two left elect new leaders and go on taking writes acknowledged by both.
    later = [f"after-{n}".encode() for n in range(30)]
    for value in later:
        produce_sync(producer, topic, key=value, value=value, timeout_s=60)
    led = cluster.partitions(settings, topic)
    assert all(p.leader not in (victim, -1) for p in led)

    kafka.start_node(settings, victim)
    cluster.wait_in_sync(settings, [topic], 120)
    assert set(_read_all(settings, topic)) == set(sent + later)


def _read_all(settings: Settings, topic: str) -> list[bytes]:
    consumer = make_consumer(settings, f"reader-{uuid.uuid4().hex}", "operator")
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        wait_for(lambda: _drain(consumer, got) >= 60, 60, "every acknowledged message")
    finally:
        consumer.close()
    return got


def _drain(consumer: Consumer, into: list[bytes]) -> int:
    for message in consumer.consume(100, 0.5):
        if message.error() is None and message.value() is not None:
            into.append(bytes(message.value() or b""))
    return len(into)


@pytest.fixture
def table(stack: Cluster) -> Iterator[str]:
    name = f"api.t_{uuid.uuid4().hex[:12]}"  # a schema the owner role owns
    with psycopg.connect(database_url(stack.settings, OWNER), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (n int PRIMARY KEY)")
    yield name
    with psycopg.connect(database_url(stack.settings, OWNER), autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


def _write(pool: ConnectionPool, table: str, n: int) -> bool:
    """One insert through the pool; False if it failed (the pool then drops a broken
    connection and the next try gets a fresh one)."""
    try:
        with pool.connection(timeout=10) as conn:
            conn.execute(f"INSERT INTO {table} VALUES (%s) ON CONFLICT DO NOTHING", (n,))
    except psycopg.Error:
        return False
    return True


def _rows(settings: Settings, table: str) -> set[int]:
    with psycopg.connect(database_url(settings, OWNER)) as conn:
        return {row[0] for row in conn.execute(f"SELECT n FROM {table}")}


def test_a_pool_finds_the_new_primary_after_a_planned_failover(stack: Cluster, table: str) -> None:
    before = pg_standby.primary(pg_standby.status(stack.settings))
    assert before is not None
    with make_pool(stack.settings, OWNER, name="test") as pool:
        assert all(_write(pool, table, n) for n in range(20))

        stack.cli("dev", "failover")

        after = pg_standby.primary(pg_standby.status(stack.settings))
        assert after is not None
        assert after.name != before.name
        wait_for(lambda: _write(pool, table, 20), 60, "a write through the same pool")
        assert all(_write(pool, table, n) for n in range(21, 40))
    # Synchronous: what the old primary acknowledged is on the new one.
    assert _rows(stack.settings, table) == set(range(40))


def test_a_killed_primary_is_replaced_and_comes_back_as_the_standby(
    stack: Cluster, table: str
) -> None:
    lost = pg_standby.primary(pg_standby.status(stack.settings))
    assert lost is not None
    with make_pool(stack.settings, OWNER, name="test") as pool:
        assert all(_write(pool, table, n) for n in range(20))

        pg_standby.kill(stack.settings, lost.name)
        wait_for(lambda: _write(pool, table, 20), 90, "a write after the monitor promoted")

    # The promoted server takes writes a moment before the monitor records it as primary.
    def promoted() -> bool:
        now = pg_standby.primary(pg_standby.status(stack.settings))
        return now is not None and now.name != lost.name

    wait_for(promoted, 60, "the monitor to show the standby promoted")
    pg_standby.start(stack.settings, lost.name)
    pg_standby.wait_settled(stack.settings, 180)
    assert _rows(stack.settings, table) == set(range(21))
