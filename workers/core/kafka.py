"""Every Kafka call FlowPay makes goes through this module (confluent-kafka / librdkafka).

Keeping the client behind these few functions keeps the choice of client in one file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    stop_before_delay,
    wait_exponential,
    wait_fixed,
)

from workers.core.config import KafkaRole, Settings
from workers.core.errors import StackError, TransientError
from workers.core.kafka_security import security_config, verify_access
from workers.core.topics import topic_configs

__all__ = ["Consumer", "KafkaError", "KafkaException", "Message", "Producer", "TopicPartition"]

log = logging.getLogger(__name__)


def bootstrap_servers(settings: Settings) -> str:
    """The configured brokers, else every node of the dev stack's."""
    local = ",".join(f"127.0.0.1:{port}" for port in settings.dev.kafka_ports)
    return settings.kafka.bootstrap_servers or local


def client_config(settings: Settings, role: KafkaRole) -> dict[str, Any]:
    """What every producer, consumer and admin client of ``role`` is configured with.

    ``role`` names the principal the client authenticates as (``kafka.principals.<role>``, else
    the shared credentials), so it must be the role whose rights the client needs.
    ``kafka.client_properties`` come after FlowPay's defaults; each kind of client then adds
    what FlowPay's guarantees rest on, which they cannot change.
    """
    return {
        "bootstrap.servers": bootstrap_servers(settings),
        "client.id": f"{settings.kafka.client_id}-{role}",
        "broker.address.family": "v4",
        # librdkafka's own lines go through Python logging, not straight to stderr.
        "logger": logging.getLogger(f"librdkafka.{role}"),
        **security_config(settings, role),
        **settings.kafka.client_properties,
    }


def check_access(settings: Settings, role: KafkaRole) -> None:
    """Raise KafkaAccessError now if the brokers refuse ``role``'s credentials or TLS set-up.

    For a role to stop at start with one clear line, rather than once it first needs Kafka.
    """
    verify_access(client_config(settings, role), role)


def make_producer(settings: Settings, role: KafkaRole, **overrides: Any) -> Producer:
    """An idempotent producer: acks=all, no duplicates or reordering on its own retries."""
    check_access(settings, role)
    return Producer(producer_config(settings, role, **overrides))


def producer_config(settings: Settings, role: KafkaRole, **overrides: Any) -> dict[str, Any]:
    return {
        "linger.ms": 5,
        "compression.type": "lz4",
        # Keep retrying through a broker outage; the caller decides when to give up.
        "message.timeout.ms": 300_000,
        **client_config(settings, role),
        "enable.idempotence": True,
        "acks": "all",
        **overrides,
    }


def group_id(settings: Settings, group: str) -> str:
    """The Kafka group id of a logical group: one FlowPay's groups never mix with another's."""
    return f"{settings.kafka.topic_prefix}.{group}"


def make_consumer(settings: Settings, group: str, role: KafkaRole, **overrides: Any) -> Consumer:
    """A consumer that never commits by itself: the runner commits after the effect is durable."""
    check_access(settings, role)
    return Consumer(consumer_config(settings, group, role, **overrides))


def consumer_config(
    settings: Settings, group: str, role: KafkaRole, **overrides: Any
) -> dict[str, Any]:
    return {
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        "heartbeat.interval.ms": min(3000, settings.kafka.session_timeout_ms // 3),
        **client_config(settings, role),
        "group.id": group_id(settings, group),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        **overrides,
    }


def consume_ready(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to ``max_messages``: waits up to ``timeout_s`` for the first, then takes only those
    already fetched.

    ``Consumer.consume(n, timeout)`` returns only when ``n`` messages are there or the timeout
    expires, so at low load every batch would wait out the whole timeout.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, 0)]


def log_consumer_error(role: str, error: KafkaError) -> None:
    """A consumer's error event: worth a line, except the end of a partition."""
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("%s: consumer error: %s", role, error)


def make_admin(
    settings: Settings, role: KafkaRole = "operator", *, quiet: bool = False
) -> AdminClient:
    """An admin client; ``quiet`` silences librdkafka, for probes that expect refusals."""
    config = client_config(settings, role)
    if quiet:
        config["log_level"] = 0
    else:
        verify_access(config, role)
    return AdminClient(config)


def produce_sync(
    producer: Producer,
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, str | bytes | None]] | None = None,
    timeout_s: float = 30.0,
) -> Message:
    """Produce one message and wait for its acknowledgement; TransientError if it is not acked."""
    outcome: list[tuple[KafkaError | None, Message]] = []
    producer.produce(
        topic,
        key=key,
        value=value,
        # A list: librdkafka's binding takes a list or a dict of headers, not any sequence.
        headers=None if headers is None else list(headers),
        on_delivery=lambda e, m: outcome.append((e, m)),
    )
    producer.flush(timeout_s)
    if not outcome:
        raise TransientError(f"no acknowledgement from Kafka for {topic} within {timeout_s}s")
    error, message = outcome[0]
    if error is not None:
        raise TransientError(f"produce to {topic} failed: {error}")
    return message


def wait_ready(settings: Settings, timeout_s: float) -> None:
    """Block until the brokers answer a metadata request, or raise StackError."""
    admin = make_admin(settings, quiet=True)
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(KafkaException),
            wait=wait_fixed(0.2),
            stop=stop_after_delay(timeout_s),
        ):
            with attempt:
                admin.list_topics(timeout=2)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise StackError(f"Kafka at {bootstrap_servers(settings)} did not answer: {last}") from None


def is_ready(settings: Settings, timeout_s: float = 2.0) -> bool:
    try:
        make_admin(settings, quiet=True).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def create_topics(settings: Settings, names: Iterable[str] | None = None) -> dict[str, str]:
    """Create FlowPay's topics; {name: "created" | "exists"}. Safe to run any number of times."""
    configs = topic_configs(settings)
    wanted: Sequence[str] = list(names) if names is not None else list(configs)
    admin = make_admin(settings)
    new = [
        NewTopic(
            name,
            num_partitions=settings.kafka.partitions,
            replication_factor=settings.kafka.replication_factor or -1,  # -1: brokers' default
            config=configs.get(name, {}),
        )
        for name in wanted
    ]
    result: dict[str, str] = {}
    for name, future in admin.create_topics(new, request_timeout=30).items():
        try:
            future.result()
            result[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"cannot create topic {name}: {exc.args[0].str()}") from None
            result[name] = "exists"
    _await_metadata(admin, list(result))
    return result


def delete_topics(settings: Settings) -> list[str]:
    """Delete every topic under the settings' prefix; the names it asked to delete.

    For throwaway prefixes (tests, benchmarks): the payments topic keeps everything, and a
    broker left with thousands of them grows slow for every client.
    """
    admin = make_admin(settings)
    prefix = settings.kafka.topic_prefix + "."
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    for future in admin.delete_topics(names, request_timeout=30).values() if names else ():
        try:
            future.result()
        except KafkaException as exc:  # gone already, or the broker is busy: not worth failing
            log.warning("topic not deleted: %s", exc)
    return names


def _led(topic: Any) -> bool:
    """The topic is known and every partition has a leader (else reads fail NOT_LEADER)."""
    partitions = topic.partitions.values()
    return (
        not topic.error
        and bool(partitions)
        and all(p.leader >= 0 and not p.error for p in partitions)
    )


def _await_metadata(admin: AdminClient, names: list[str], timeout_s: float = 15.0) -> None:
    # A created topic is acknowledged by the controller before every broker's metadata has it;
    # callers produce or describe right away, so wait until the metadata shows them all (and
    # after the timeout carry on: the caller's own request then says what is wrong).
    def all_led() -> bool:
        known = admin.list_topics(timeout=5).topics
        return all(name in known and _led(known[name]) for name in names)

    Retrying(
        retry=retry_if_result(lambda led: not led),
        wait=wait_fixed(0.05),
        stop=stop_after_delay(timeout_s),
        retry_error_callback=lambda _state: False,
    )(all_led)


def describe_topics(settings: Settings, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Partition count and retention of each topic that exists."""
    admin = make_admin(settings)
    metadata = admin.list_topics(timeout=10).topics
    present = [n for n in names if n in metadata]
    described: dict[str, dict[str, Any]] = {}
    if not present:
        return described
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in present]
    for resource, future in admin.describe_configs(resources).items():
        entries = future.result()
        described[resource.name] = {
            "partitions": len(metadata[resource.name].partitions),
            "retention.ms": entries["retention.ms"].value,
        }
    return described


# A commit meets these while a restarted broker loads its groups' state; they pass on a retry.
_COORDINATOR_SETTLING = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
    }
)


def coordinator_settling(exc: BaseException) -> bool:
    if not isinstance(exc, KafkaException):
        return False
    error = exc.args[0]
    return bool(error.retriable()) or error.code() in _COORDINATOR_SETTLING


def commit_offsets(
    consumer: Consumer, offsets: Sequence[TopicPartition], *, role: str, timeout_s: float = 30.0
) -> bool:
    """Commit synchronously, retrying while the group coordinator settles; never raises.

    False when the commit did not happen (the coordinator stayed away, or the partitions moved
    to another member): those messages are delivered again, which every handler tolerates.
    """
    try:
        for attempt in Retrying(
            retry=retry_if_exception(coordinator_settling),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            stop=stop_before_delay(timeout_s),
            reraise=True,
        ):
            with attempt:
                consumer.commit(offsets=list(offsets), asynchronous=False)
    except KafkaException as exc:
        log.warning(
            "%s: commit failed (%s); those messages will be delivered again", role, exc.args[0]
        )
        return False
    return True


# librdkafka does not flag these retriable on a watermark query, yet they pass once the new
# partition's leader is in place (the client refreshes its metadata on each of them).
_LEADERSHIP_SETTLING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
)


def leadership_settling(exc: BaseException) -> bool:
    if not isinstance(exc, KafkaException):
        return False
    error = exc.args[0]
    return bool(error.retriable()) or error.code() in _LEADERSHIP_SETTLING


def watermarks(
    consumer: Consumer, topic: str, partition: int, timeout_s: float = 15.0
) -> tuple[int, int]:
    """(low, high) offsets of one partition, retrying the errors Kafka calls retriable.

    A partition just created can be in the metadata before its broker leads it, and then
    answers NOT_LEADER_FOR_PARTITION for a moment.
    """
    for attempt in Retrying(
        retry=retry_if_exception(leadership_settling),
        wait=wait_fixed(0.1),
        stop=stop_after_delay(timeout_s),
        reraise=True,
    ):
        with attempt:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
    return int(low), int(high)


def consumer_lag(consumer: Consumer) -> dict[tuple[str, int], int]:
    """Messages behind the end of each assigned partition, for monitoring.

    The end offsets are the client's cached ones (updated by every fetch, no broker round trip);
    a partition the client has not fetched yet is left out. Where nothing was consumed yet, the
    committed offset counts, else the log start.
    """
    positions = consumer.position(consumer.assignment())
    unread = [tp for tp in positions if tp.offset < 0]
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in (consumer.committed(unread, timeout=2) if unread else [])
    }
    lags: dict[tuple[str, int], int] = {}
    for tp in positions:
        low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            continue
        key = (tp.topic, tp.partition)
        offset = tp.offset if tp.offset >= 0 else committed.get(key, -1)
        lags[key] = max(int(high) - max(int(offset), int(low), 0), 0)
    return lags
