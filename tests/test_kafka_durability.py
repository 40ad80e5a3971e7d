"""The Kafka settings FlowPay's durability rests on, exercised as far as one broker can.

On a cluster (docs/scaling.md): replication factor 3, min.insync.replicas 2, and producers with
acks=all, so an acknowledged event survives the loss of a broker. One broker cannot show the
failover, but it can show FlowPay asks for each of those settings.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

from tests.conftest import override
from workers.core.config import Settings, load_settings
from workers.core.errors import ConfigError, StackError
from workers.core.kafka import (
    consumer_config,
    create_topics,
    make_admin,
    producer_config,
)
from workers.core.topics import topics


def _fresh(base: Settings, **kafka: object) -> Settings:
    return override(base, "kafka", topic_prefix=f"t{uuid.uuid4().hex[:12]}", **kafka)


def test_producers_are_idempotent_and_wait_for_every_insync_replica(
    base_settings: Settings,
) -> None:
    config = producer_config(base_settings, "operator")
    assert (config["acks"], config["enable.idempotence"]) == ("all", True)
    assert config["compression.type"] == "lz4"
    assert config["message.timeout.ms"] >= 60_000  # rides out a leader election


def test_consumers_commit_only_what_was_handled_and_skip_aborted_writes(
    base_settings: Settings,
) -> None:
    config = consumer_config(base_settings, "ledger", "operator")
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["isolation.level"] == "read_committed"
    assert config["auto.offset.reset"] == "earliest"
    assert config["group.id"] == f"{base_settings.kafka.topic_prefix}.ledger"


def test_topics_get_the_configured_replication_and_min_insync_replicas(
    base_settings: Settings,
) -> None:
    settings = _fresh(base_settings, replication_factor=1, min_insync_replicas=1)
    names = topics(settings)
    create_topics(settings)
    admin = make_admin(settings)
    metadata = admin.list_topics(timeout=10).topics
    for name in names.all():
        assert {len(p.replicas) for p in metadata[name].partitions.values()} == {1}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names.all()]
    for future in admin.describe_configs(resources).values():
        entry = future.result()["min.insync.replicas"]
        assert entry.value == "1"
        assert entry.source == 1  # DYNAMIC_TOPIC_CONFIG: set by FlowPay, not a broker default


def test_more_replicas_than_brokers_is_one_clear_error(base_settings: Settings) -> None:
    settings = _fresh(base_settings, replication_factor=3, min_insync_replicas=2)
    with pytest.raises(StackError, match="replication"):
        create_topics(settings)


def test_min_insync_above_the_replication_factor_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWPAY_KAFKA__REPLICATION_FACTOR", "2")
    monkeypatch.setenv("FLOWPAY_KAFKA__MIN_INSYNC_REPLICAS", "3")
    with pytest.raises(ConfigError, match="kafka"):
        load_settings()
