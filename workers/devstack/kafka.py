"""Apache Kafka in KRaft mode, one combined broker and controller, assembled from Maven Central.

``org.apache.kafka:kafka_2.13`` brings the broker and the storage tool; a log4j2 SLF4J binding
makes it log. ``KAFKA_HOME`` (or ``dev.kafka_home``) pointing at a Kafka distribution is used
instead of resolving jars.

With ``kafka.security_protocol = "SASL_SSL"`` (what ``flowpay dev up --secure`` configures) the
broker listens with TLS and SCRAM-SHA-512 only, denies whatever no ACL allows, and keeps its
data apart from the PLAINTEXT broker's. Its SCRAM users are made when the storage is formatted
(KIP-900); its own principal, ``broker``, is the one super user and creates the roles' ACLs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from workers.core.config import Settings
from workers.core.errors import StackError
from workers.core.kafka import bootstrap_servers, is_ready
from workers.devstack import secure
from workers.devstack.paths import StackPaths, write_private
from workers.devstack.procs import alive, read_pid, spawn, tail, terminate

log = logging.getLogger(__name__)

MAIN_CLASS = "kafka.Kafka"
# Kafka 4.1 ships with slf4j-api 1.7.x and log4j2 2.24.x.
LOG4J_VERSION = "2.24.3"

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
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
controller.listener.names=CONTROLLER
inter.broker.listener.name={listener}
{security}log.dirs={data}
num.partitions={partitions}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
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
class KafkaStatus:
    running: bool
    pid: int | None
    bootstrap_servers: str
    log: Path


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


def status(settings: Settings) -> KafkaStatus:
    paths = StackPaths.of(settings)
    pid = read_pid(paths.kafka_pid)
    return KafkaStatus(
        running=alive(pid, MAIN_CLASS) and is_ready(settings, 1.0),
        pid=pid,
        bootstrap_servers=bootstrap_servers(settings),
        log=paths.kafka_log,
    )


def up(settings: Settings) -> KafkaStatus:
    """Resolve jars, format once, start unless running, wait until it answers metadata requests."""
    paths = StackPaths.of(settings)
    listener = _listener(settings)
    pid = read_pid(paths.kafka_pid)
    if alive(pid, MAIN_CLASS):
        _same_listener(paths, listener)
        _wait_ready(settings, paths, pid)
    else:
        _start(settings, paths, listener)
    if listener == secure.PROTOCOL:
        secure.admit_principals(settings)
    return status(settings)


def _start(settings: Settings, paths: StackPaths, listener: str) -> None:
    libs = resolve_jars(settings)
    classpath = f"{libs}/*"
    properties = _write_config(settings, paths, listener)
    scram = [] if listener == "PLAINTEXT" else secure.add_scram_arguments(settings)
    _format_once(paths, classpath, properties, scram)
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
        paths.kafka_log,
    )  # fmt: skip
    paths.kafka_pid.write_text(f"{pid}\n")
    _wait_ready(settings, paths, pid)


def down(settings: Settings) -> bool:
    paths = StackPaths.of(settings)
    pid = read_pid(paths.kafka_pid)
    return pid is not None and terminate(pid, MAIN_CLASS, timeout_s=60)


def _listener(settings: Settings) -> str:
    protocol = settings.kafka.security_protocol
    if protocol not in ("PLAINTEXT", secure.PROTOCOL):
        raise StackError(
            f"the local broker listens PLAINTEXT, or SASL_SSL (`flowpay dev up --secure`), "
            f"not {protocol}"
        )
    return protocol


def _same_listener(paths: StackPaths, listener: str) -> None:
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


def _write_config(settings: Settings, paths: StackPaths, listener: str) -> Path:
    data = data_dir(paths, listener)
    data.mkdir(parents=True, exist_ok=True)
    properties = paths.kafka_dir / "server.properties"
    text = _SERVER.format(
        listener=listener,
        security=_PLAINTEXT if listener == "PLAINTEXT" else secure.broker_properties(settings),
        port=settings.dev.kafka_port,
        controller=settings.dev.kafka_controller_port,
        data=data,
        partitions=settings.kafka.partitions,
    )
    write_private(properties, text.encode())  # it may hold the broker's password
    _listener_file(paths).write_text(listener + "\n")
    (paths.kafka_dir / "log4j2.properties").write_text(_LOG4J)
    return properties


def _format_once(paths: StackPaths, classpath: str, properties: Path, extra: list[str]) -> None:
    data = Path(_property(properties, "log.dirs"))
    if (data / "meta.properties").exists():
        return
    cluster_file = paths.kafka_dir / "cluster-id"
    if not cluster_file.exists():
        cluster_file.write_text(_storage_tool(classpath, ["random-uuid"]).strip() + "\n")
    _storage_tool(
        classpath,
        # One argument with "=": a random id may begin with "-", which argparse takes for an option.
        ["format", "--standalone", f"--cluster-id={cluster_file.read_text().strip()}",
         "-c", str(properties), "--ignore-formatted", *extra],
    )  # fmt: skip


def _property(properties: Path, name: str) -> str:
    for line in properties.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == name:
            return value
    raise StackError(f"{properties} sets no {name}")


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


def _wait_ready(settings: Settings, paths: StackPaths, pid: int | None) -> None:
    deadline = time.monotonic() + settings.dev.start_timeout_s
    while time.monotonic() < deadline:
        if is_ready(settings, 1.0):
            return
        if not alive(pid, MAIN_CLASS):
            raise StackError(
                f"Kafka exited while starting; last lines of {paths.kafka_log}:\n"
                + tail(paths.kafka_log)
            )
        time.sleep(0.3)
    raise StackError(
        f"Kafka did not answer within {settings.dev.start_timeout_s:.0f}s; "
        f"last lines of {paths.kafka_log}:\n{tail(paths.kafka_log)}"
    )
