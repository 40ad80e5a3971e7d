"""Apache Kafka in KRaft mode, assembled from Maven Central: one node, or a cluster of them.

Every node is a combined broker and controller. One node (``dev.kafka_brokers = 1``) is a
quorum of itself; three (``flowpay dev up --brokers 3``) are a static quorum of three voters,
each node with its own ports, data directory, PID file and log, the internal topics and the
brokers' defaults set to three replicas of which two must be in sync (``min.insync.replicas``).

``org.apache.kafka:kafka_2.13`` brings the broker and the storage tool; a log4j2 SLF4J binding
makes it log. ``KAFKA_HOME`` (or ``dev.kafka_home``) pointing at a Kafka distribution is used
instead of resolving jars.

With ``kafka.security_protocol = "SASL_SSL"`` (what ``flowpay dev up --secure`` configures) the
broker listens with TLS and SCRAM-SHA-512 only, denies whatever no ACL allows, and keeps its
data apart from the PLAINTEXT broker's. Its SCRAM users are made when the storage is formatted
(KIP-900); its own principal, ``broker``, is the one super user and creates the roles' ACLs.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from workers.core.config import Settings
from workers.core.errors import StackError
from workers.core.kafka import KafkaException, is_ready, make_admin
from workers.devstack import secure
from workers.devstack.paths import StackPaths, write_private
from workers.devstack.procs import alive, read_pid, spawn, tail, terminate, wait_gone

log = logging.getLogger(__name__)

MAIN_CLASS = "kafka.Kafka"
# Kafka 4.1 ships with slf4j-api 1.7.x and log4j2 2.24.x.
LOG4J_VERSION = "2.24.3"
# A cluster's topics: each partition on three nodes, two of which must hold a write.
CLUSTER_REPLICAS = 3

_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.flowpay</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_SERVER = """\
# Written by flowpay dev; edits are overwritten.
process.roles=broker,controller
node.id={node}
{quorum}
listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
controller.listener.names=CONTROLLER
inter.broker.listener.name={listener}
{security}log.dirs={data}
num.partitions={partitions}
default.replication.factor={replicas}
min.insync.replicas={in_sync}
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={in_sync}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={in_sync}
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""

_PLAINTEXT = """\
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
"""

_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.clients.name = org.apache.kafka
logger.clients.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclass(frozen=True)
class KafkaNode:
    """One node of the local Kafka: its id, ports and files."""

    id: int
    port: int
    controller_port: int
    directory: Path  # its server.properties and PID file
    data: Path
    log: Path

    @property
    def pid_file(self) -> Path:
        return self.directory / "kafka.pid"

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class KafkaStatus:
    node: int
    running: bool
    pid: int | None
    bootstrap_servers: str
    log: Path


def nodes(settings: Settings) -> list[KafkaNode]:
    """Every node of the local Kafka, node 1 first.

    A lone node keeps the files it always had (``kafka/``, ``logs/kafka.log``); the nodes of a
    cluster have a directory each (``kafka/node-<n>/``) and a log each (``logs/kafka-<n>.log``).
    """
    paths = StackPaths.of(settings)
    dev = settings.dev
    if dev.kafka_brokers == 1:
        data = data_dir(paths, settings.kafka.security_protocol)
        return [
            KafkaNode(
                1, dev.kafka_port, dev.kafka_controller_port, paths.kafka_dir, data, paths.kafka_log
            )
        ]
    made = []
    for index, (port, controller) in enumerate(
        zip(dev.kafka_ports, dev.kafka_controller_ports, strict=True)
    ):
        directory = paths.kafka_dir / f"node-{index + 1}"
        log_file = paths.logs / f"kafka-{index + 1}.log"
        made.append(KafkaNode(index + 1, port, controller, directory, directory / "data", log_file))
    return made


def node(settings: Settings, node_id: int) -> KafkaNode:
    return next(n for n in nodes(settings) if n.id == node_id)


def libs_dir(settings: Settings) -> Path | None:
    """An existing distribution's libs/, if one is configured."""
    home = settings.dev.kafka_home or (
        Path(os.environ["KAFKA_HOME"]) if os.environ.get("KAFKA_HOME") else None
    )
    return home / "libs" if home is not None else None


def resolve_jars(settings: Settings) -> Path:
    """The directory of Kafka's jars, resolving them from Maven Central the first time."""
    existing = libs_dir(settings)
    if existing is not None:
        if not any(existing.glob("kafka_2.13-*.jar")):
            raise StackError(f"KAFKA_HOME has no Kafka jars in {existing}")
        return existing
    paths = StackPaths.of(settings)
    version = settings.dev.kafka_version
    libs = paths.kafka_dir / "libs"
    marker = libs / f".resolved-{version}"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is needed to fetch Kafka's jars; install the 'maven' package")
    paths.kafka_dir.mkdir(parents=True, exist_ok=True)
    if libs.exists():
        shutil.rmtree(libs)
    pom = paths.kafka_dir / "pom.xml"
    pom.write_text(_POM.format(version=version, log4j=LOG4J_VERSION))
    log.info("resolving Kafka %s jars from Maven Central", version)
    done = subprocess.run(
        [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={libs}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise StackError(
            f"mvn could not resolve Kafka {version}: {done.stdout[-800:]}{done.stderr[-400:]}"
        )
    marker.touch()
    return libs


def status(settings: Settings) -> list[KafkaStatus]:
    """Each node: running when its process runs and it answers a metadata request itself."""
    return [
        KafkaStatus(
            node=n.id,
            running=alive(read_pid(n.pid_file), MAIN_CLASS) and is_ready(_only(settings, n), 1.0),
            pid=read_pid(n.pid_file),
            bootstrap_servers=n.address,
            log=n.log,
        )
        for n in nodes(settings)
    ]


def up(settings: Settings) -> list[KafkaStatus]:
    """Resolve jars, format once, start every node not running, wait until each has joined."""
    listener = _listener(settings)
    if settings.dev.kafka_brokers > 1 and listener != "PLAINTEXT":
        raise StackError(
            "the local Kafka runs SASL_SSL (--secure) on one broker only; "
            "a secured cluster is not part of the local stack"
        )
    paths = StackPaths.of(settings)
    started = [n for n in nodes(settings) if not alive(read_pid(n.pid_file), MAIN_CLASS)]
    if len(started) < settings.dev.kafka_brokers:
        _same_listener(paths, listener)
    if started:
        classpath = f"{resolve_jars(settings)}/*"
        cluster_id(paths)  # once, before the nodes' formats read it
        # In parallel: formatting each node's storage starts a JVM of its own.
        with ThreadPoolExecutor(len(started)) as each:
            list(each.map(lambda n: _start(settings, paths, n, listener, classpath), started))
    for n in nodes(settings):
        _wait_ready(settings, n)
    if listener == secure.PROTOCOL:
        secure.admit_principals(settings)
    return status(settings)


def start_node(settings: Settings, node_id: int) -> None:
    """Start one node of the cluster again (after a kill), and wait until it has joined."""
    n = node(settings, node_id)
    if not alive(read_pid(n.pid_file), MAIN_CLASS):
        classpath = f"{resolve_jars(settings)}/*"
        _start(settings, StackPaths.of(settings), n, _listener(settings), classpath)
    _wait_ready(settings, n)


def kill_node(settings: Settings, node_id: int) -> None:
    """SIGKILL one node, as a lost machine: no controlled shutdown, no leadership handed on."""
    pid = read_pid(node(settings, node_id).pid_file)
    if pid is None or not alive(pid, MAIN_CLASS):
        return
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid, MAIN_CLASS, timeout_s=30)


def _start(
    settings: Settings, paths: StackPaths, n: KafkaNode, listener: str, classpath: str
) -> None:
    properties = _write_config(settings, paths, n, listener)
    scram = [] if listener == "PLAINTEXT" else secure.add_scram_arguments(settings)
    _format_once(settings, paths, classpath, n, scram)
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "Java 17 or newer is needed to run Kafka; install 'openjdk-17-jre-headless'"
        )
    heap = settings.dev.kafka_heap
    pid = spawn(
        [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
         f"-Dlog4j2.configurationFile=file:{paths.kafka_dir / 'log4j2.properties'}",
         "-cp", classpath, MAIN_CLASS, str(properties)],
        n.log,
    )  # fmt: skip
    n.pid_file.write_text(f"{pid}\n")


def down(settings: Settings) -> bool:
    """Stop every node: SIGTERM to all at once, each waited for (SIGKILL past the timeout).

    All at once: a node stopped last, alone, would wait for a quorum that has gone.
    """
    running = [
        (n, pid)
        for n in nodes(settings)
        if (pid := read_pid(n.pid_file)) is not None and alive(pid, MAIN_CLASS)
    ]
    if not running:
        return False
    with ThreadPoolExecutor(len(running)) as each:
        list(each.map(lambda item: terminate(item[1], MAIN_CLASS, timeout_s=60), running))
    return True


def _listener(settings: Settings) -> str:
    protocol = settings.kafka.security_protocol
    if protocol not in ("PLAINTEXT", secure.PROTOCOL):
        raise StackError(
            f"the local broker listens PLAINTEXT, or SASL_SSL (`flowpay dev up --secure`), "
            f"not {protocol}"
        )
    return protocol


def _same_listener(paths: StackPaths, listener: str) -> None:
    """A running broker of the other listener is refused: its data is another broker's."""
    running = _listener_file(paths).read_text().strip() if _listener_file(paths).exists() else ""
    if running and running != listener:
        raise StackError(
            f"the local broker runs {running}, not {listener}: "
            "stop the stack first (`flowpay dev down`)"
        )


def _listener_file(paths: StackPaths) -> Path:
    return paths.kafka_dir / "listener"


def data_dir(paths: StackPaths, listener: str) -> Path:
    """Where the broker of this listener keeps its data: the secure one apart from the other."""
    return paths.kafka_data if listener == "PLAINTEXT" else paths.kafka_dir / "data-secure"


def _write_config(settings: Settings, paths: StackPaths, n: KafkaNode, listener: str) -> Path:
    n.data.mkdir(parents=True, exist_ok=True)
    replicas = min(settings.dev.kafka_brokers, CLUSTER_REPLICAS)
    text = _SERVER.format(
        node=n.id,
        quorum=_quorum(settings),
        listener=listener,
        security=_PLAINTEXT if listener == "PLAINTEXT" else secure.broker_properties(settings),
        port=n.port,
        controller=n.controller_port,
        data=n.data,
        partitions=settings.kafka.partitions,
        replicas=replicas,
        in_sync=max(1, replicas - 1),
    )
    n.directory.mkdir(parents=True, exist_ok=True)
    write_private(n.properties, text.encode())  # it may hold the broker's password
    _listener_file(paths).write_text(listener + "\n")
    (paths.kafka_dir / "log4j2.properties").write_text(_LOG4J)
    return n.properties


def _quorum(settings: Settings) -> str:
    """A lone node bootstraps a dynamic quorum of itself; a cluster's voters are fixed."""
    ports = settings.dev.kafka_controller_ports
    if len(ports) == 1:
        return f"controller.quorum.bootstrap.servers=127.0.0.1:{ports[0]}"
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports))
    return f"controller.quorum.voters={voters}"


def _format_once(
    settings: Settings, paths: StackPaths, classpath: str, n: KafkaNode, extra: list[str]
) -> None:
    if (n.data / "meta.properties").exists():
        return
    # A lone node formats itself as the one voter; a cluster's nodes share the cluster id and
    # read their voters from controller.quorum.voters.
    standalone = ["--standalone"] if settings.dev.kafka_brokers == 1 else []
    _storage_tool(
        classpath,
        # One argument with "=": a random id may begin with "-", which argparse takes for an option.
        ["format", *standalone, f"--cluster-id={cluster_id(paths)}",
         "-c", str(n.properties), "--ignore-formatted", *extra],
    )  # fmt: skip


def cluster_id(paths: StackPaths) -> str:
    """The stack's cluster id, made the first time: every node is formatted with it."""
    cluster_file = paths.kafka_dir / "cluster-id"
    if not cluster_file.exists():
        paths.kafka_dir.mkdir(parents=True, exist_ok=True)
        # What the storage tool's random-uuid prints (16 random bytes, URL-safe base64), made
        # here to spare a JVM's start.
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cluster_file.write_text(made + "\n")
    return cluster_file.read_text().strip()


def _storage_tool(classpath: str, args: list[str]) -> str:
    done = subprocess.run(
        ["java", "-cp", classpath, "kafka.tools.StorageTool", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        said = _without_passwords((done.stderr or done.stdout)[-800:], args)
        raise StackError(f"kafka-storage {args[0]} failed: {said}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _without_passwords(text: str, args: list[str]) -> str:
    # The tool may echo an --add-scram argument back in its complaint.
    for arg in args:
        if "password=" in arg:
            password = arg.split("password=", 1)[1].rstrip("]")
            text = text.replace(password, "***")
    return text


def _only(settings: Settings, n: KafkaNode) -> Settings:
    """``settings`` with this node alone as the bootstrap server: to ask it, not the cluster."""
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": n.address})
    return settings.model_copy(update={"kafka": kafka})


def _wait_ready(settings: Settings, n: KafkaNode) -> None:
    deadline = time.monotonic() + settings.dev.start_timeout_s
    alone = _only(settings, n)
    name = "Kafka" if settings.dev.kafka_brokers == 1 else f"Kafka node {n.id}"
    while time.monotonic() < deadline:
        if is_ready(alone, 1.0) and n.id in _registered(alone):
            return
        if not alive(read_pid(n.pid_file), MAIN_CLASS):
            raise StackError(
                f"{name} exited while starting; last lines of {n.log}:\n" + tail(n.log)
            )
        time.sleep(0.3)
    raise StackError(
        f"{name} did not answer within {settings.dev.start_timeout_s:.0f}s; "
        f"last lines of {n.log}:\n{tail(n.log)}"
    )


def _registered(settings: Settings) -> set[int]:
    """The brokers the cluster's metadata lists: a node that answers has also joined."""
    try:
        brokers = make_admin(settings, quiet=True).list_topics(timeout=2).brokers
    except KafkaException:
        return set()
    return {int(b) for b in brokers}
