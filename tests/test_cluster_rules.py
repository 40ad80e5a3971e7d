"""The local cluster's rules without its servers: node layout, URLs, quorum views, the shape."""

from __future__ import annotations

from pathlib import Path

import psycopg.conninfo
import pytest

from tests.test_config import _clean_env as _clean_env  # autouse: no FLOWPAY_* from outside
from workers.core.config import Settings, load_settings
from workers.core.db import dev_url
from workers.core.errors import ConfigError, StackError
from workers.core.kafka import bootstrap_servers
from workers.devstack import shape
from workers.devstack.cluster import (
    PartitionState,
    Quorum,
    busiest_leader,
    fully_in_sync,
    newest,
    read_quorum_state,
)
from workers.devstack.kafka import nodes


def _settings(tmp_path: Path, dev: str) -> Settings:
    config = tmp_path / "flowpay.toml"
    config.write_text(f'[dev]\nhome = "{tmp_path / "home"}"\n{dev}\n')
    return load_settings(config)


def test_three_nodes_each_have_their_own_ports_data_and_log(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, "kafka_port = 29000\nkafka_controller_port = 29001\nkafka_brokers = 3"
    )

    made = nodes(settings)

    assert [(n.id, n.port, n.controller_port) for n in made] == [
        (1, 29000, 29001),
        (2, 29002, 29003),
        (3, 29004, 29005),
    ]
    assert len({n.data for n in made}) == len({n.log for n in made}) == 3
    assert bootstrap_servers(settings) == "127.0.0.1:29000,127.0.0.1:29002,127.0.0.1:29004"


def test_a_lone_node_keeps_the_files_it_always_had(tmp_path: Path) -> None:
    (only,) = nodes(_settings(tmp_path, ""))

    assert only.directory == tmp_path / "home" / "kafka"
    assert only.data == tmp_path / "home" / "kafka" / "data"


@pytest.mark.parametrize(
    ("dev", "says"),
    [
        ("kafka_brokers = 2", "2 brokers survive no loss"),
        # Node 2's client port would be node 1's controller port.
        ("kafka_port = 29000\nkafka_controller_port = 29002\nkafka_brokers = 3", "overlap"),
        ("pg_port = 29003\nkafka_port = 29000\nkafka_controller_port = 29003", "overlaps a Kafka"),
        ("pg_port = 29002\npg_standby = true\nkafka_port = 29003\nkafka_controller_port = 29010",
         "overlaps a Kafka"),
    ],
)  # fmt: skip
def test_a_shape_that_cannot_work_is_refused(tmp_path: Path, dev: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        _settings(tmp_path, dev)


def test_with_a_standby_every_url_names_both_servers_and_asks_for_the_writable_one(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, "pg_port = 31000\npg_standby = true")

    url = dev_url(settings, "flowpay_processor")
    parts = psycopg.conninfo.conninfo_to_dict(url)

    assert parts["host"] == "127.0.0.1,127.0.0.1"
    assert parts["port"] == "31000,31001"
    assert parts["target_session_attrs"] == "read-write"
    assert parts["user"] == "flowpay_processor"
    assert int(str(parts["connect_timeout"])) > 0


def test_a_lone_server_keeps_its_plain_url(tmp_path: Path) -> None:
    parts = psycopg.conninfo.conninfo_to_dict(dev_url(_settings(tmp_path, "pg_port = 31000"), "u"))
    assert (parts["host"], parts["port"]) == ("127.0.0.1", "31000")
    assert "target_session_attrs" not in parts


def test_the_newest_epochs_leader_wins_over_a_stale_view() -> None:
    stale = read_quorum_state(
        '{"leaderId": 1, "leaderEpoch": 3, "currentVoters": [{"voterId": 1}, {"voterId": 2}]}'
    )
    fresh = read_quorum_state('{"leaderId": 2, "leaderEpoch": 4, "currentVoters": []}')
    electing = read_quorum_state('{"leaderId": -1, "leaderEpoch": 5}')

    assert stale == Quorum(1, 3, (1, 2))
    assert newest([stale, fresh]).leader == 2
    assert newest([stale, fresh, electing]) == Quorum(None, 5, ())
    assert newest([]) == Quorum(None, 0, ())


def test_the_busiest_leader_leads_the_most_partitions() -> None:
    states = [
        PartitionState(0, 2, (1, 2, 3), (1, 2, 3)),
        PartitionState(1, 3, (1, 2, 3), (1, 2, 3)),
        PartitionState(2, 3, (1, 2, 3), (2, 3)),
        PartitionState(3, -1, (1, 2, 3), ()),
    ]

    assert busiest_leader(states) == 3
    assert busiest_leader(states[:2]) == 2  # a tie: the lowest id
    assert busiest_leader(states[3:]) is None
    assert not fully_in_sync(states)
    assert fully_in_sync(states[:2])


def test_the_recorded_shape_applies_unless_flags_or_settings_say_otherwise(
    tmp_path: Path,
) -> None:
    base = _settings(tmp_path, "kafka_port = 29000\nkafka_controller_port = 29001")
    assert shape.applied(base).dev.kafka_brokers == 1

    shape.record(shape.applied(base, brokers=3, pg_standby=True))

    recalled = shape.applied(base)
    assert (recalled.dev.kafka_brokers, recalled.dev.pg_standby) == (3, True)
    assert shape.applied(base, brokers=1).dev.kafka_brokers == 1
    told = _settings(
        tmp_path, "kafka_port = 29000\nkafka_controller_port = 29001\npg_standby = false"
    )
    assert shape.applied(told).dev.pg_standby is False
    assert shape.applied(told).dev.kafka_brokers == 3


def test_a_bad_shape_flag_or_file_is_one_clear_error(tmp_path: Path) -> None:
    base = _settings(tmp_path, "")
    with pytest.raises(ConfigError, match="2 brokers"):
        shape.applied(base, brokers=2)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / shape.FILE).write_text("{not json")
    with pytest.raises(StackError, match="damaged"):
        shape.applied(base)
