"""Kafka security settings and the ACL table, as pure code: no broker needed.

What the brokers make of them is in tests/test_kafka_security.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from workers.core.config import KAFKA_ROLES, KafkaPrincipal, KafkaRole, Settings, load_settings
from workers.core.errors import ConfigError
from workers.core.kafka import client_config, consumer_config, producer_config
from workers.core.kafka_acls import ACCESS, plan, topic_names

SECURE = """
[kafka]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-256"
sasl_username = "shared"
sasl_password = "shared-secret"
ssl_ca_location = "/etc/ca.pem"

[kafka.client_properties]
socket.keepalive.enable = true
"linger.ms" = 20

[kafka.principals.notifier]
username = "flowpay-notifier"
password = "notifier-secret"
"""


@pytest.fixture(autouse=True)
def _no_flowpay_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLOWPAY_"):
            monkeypatch.delenv(name)


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "flowpay.toml"
    path.write_text(text)
    return load_settings(path)


def test_a_role_authenticates_as_its_own_principal_else_the_shared_one(tmp_path: Path) -> None:
    settings = _load(tmp_path, SECURE)
    notifier, ledger = client_config(settings, "notifier"), client_config(settings, "ledger")
    assert (notifier["sasl.username"], notifier["sasl.password"]) == (
        "flowpay-notifier",
        "notifier-secret",
    )
    assert (ledger["sasl.username"], ledger["sasl.password"]) == ("shared", "shared-secret")
    for config in (notifier, ledger):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanism"] == "SCRAM-SHA-256"
        assert config["ssl.ca.location"] == "/etc/ca.pem"


def test_client_properties_reach_every_kind_of_client_but_not_flowpays_guarantees(
    tmp_path: Path,
) -> None:
    settings = _load(tmp_path, SECURE)
    producer = producer_config(settings, "outbox")
    consumer = consumer_config(settings, "ledger", "ledger")
    assert producer["linger.ms"] == 20  # over FlowPay's default
    assert producer["socket.keepalive.enable"] is True  # dotted TOML keys, joined back
    assert consumer["socket.keepalive.enable"] is True
    assert (producer["acks"], producer["enable.idempotence"]) == ("all", True)
    assert consumer["enable.auto.commit"] is False


@pytest.mark.parametrize(
    "line",
    [
        '"enable.auto.commit" = true',
        '"sasl.password" = "x"',
        '"acks" = 1',
        '"session.timeout.ms" = 10000',
    ],
)
def test_client_properties_may_not_set_what_flowpay_sets(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.client_properties"):
        _load(tmp_path, f"[kafka.client_properties]\n{line}\n")


def test_sasl_without_credentials_for_a_role_names_the_role(tmp_path: Path) -> None:
    settings = _load(tmp_path, '[kafka]\nsecurity_protocol = "SASL_SSL"\n')
    with pytest.raises(ConfigError, match="credentials for role processor"):
        client_config(settings, "processor")


def test_a_username_without_its_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sasl_username and sasl_password"):
        _load(tmp_path, '[kafka]\nsasl_username = "lonely"\n')


def test_an_unknown_role_under_principals_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.principals"):
        _load(tmp_path, '[kafka.principals.procesor]\nusername = "x"\npassword = "y"\n')


def test_passwords_stay_hidden_when_settings_are_shown(tmp_path: Path) -> None:
    settings = _load(tmp_path, SECURE)
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "shared-secret" not in shown
    assert "notifier-secret" not in shown


def test_plaintext_clients_carry_no_credentials(tmp_path: Path) -> None:
    config = client_config(_load(tmp_path, ""), "api")
    assert config["security.protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)


# --- the ACL table ------------------------------------------------------------------------------


def _each_its_own() -> Settings:
    principals = {
        role: KafkaPrincipal(username=f"u-{role}", password=SecretStr("p")) for role in KAFKA_ROLES
    }
    settings = Settings()
    kafka = settings.kafka.model_copy(
        update={"security_protocol": "SASL_SSL", "principals": principals, "topic_prefix": "fp"}
    )
    return settings.model_copy(update={"kafka": kafka})


def _who(settings: Settings, operation: str, resource: str, name: str) -> set[KafkaRole]:
    return {
        g.role
        for g in plan(settings).grants
        if (g.operation, g.resource, g.name) == (operation, resource, name)
    }


def test_only_the_relay_writes_the_event_and_command_topics() -> None:
    settings = _each_its_own()
    names = topic_names(settings)
    assert _who(settings, "write", "topic", names["commands"]) == {"outbox"}
    # The operator's `dlq replay` puts a dead letter back where it came from.
    assert _who(settings, "write", "topic", names["payments"]) == {"outbox", "operator"}
    consumers = {"api", "processor", "ledger", "notifier", "orchestrator"}
    assert _who(settings, "write", "topic", names["dead_letters"]) == consumers


def test_each_consumer_reads_in_its_own_group_only() -> None:
    settings = _each_its_own()
    grants = plan(settings).grants
    # The processor reads events and (in a group of its own) the orchestrator's commands; the
    # notifier reads events and (in a group of its own) the webhook endpoints' changes.
    also = {"processor": {"fp.processor-commands"}, "notifier": {"fp.notifier-endpoints"}}
    for role in ("api", "processor", "ledger", "notifier", "orchestrator"):
        groups = {(g.pattern, g.name) for g in grants if g.role == role and g.resource == "group"}
        expected = {f"fp.{role}", *also.get(role, set())}
        assert groups == {("literal", name) for name in expected}, role
        assert all(g.principal == f"User:u-{role}" for g in grants if g.role == role)


def test_only_the_operator_administers_topics() -> None:
    grants = plan(_each_its_own()).grants
    admin_operations = {"create", "delete", "alter", "alter_configs", "describe_configs"}
    administering = {g.role for g in grants if g.operation in admin_operations}
    assert administering == {"operator"}
    assert all(g.pattern == "prefixed" and g.name == "fp." for g in grants if g.role == "operator"
               and g.operation in admin_operations)  # fmt: skip


def test_every_role_has_a_row_and_every_grant_binds() -> None:
    assert set(ACCESS) == set(KAFKA_ROLES)
    for grant in plan(_each_its_own()).grants:
        grant.binding()  # names a real resource type, pattern and operation


def test_shared_principals_and_roles_without_one_are_reported() -> None:
    settings = Settings()
    shared = settings.kafka.model_copy(
        update={
            "sasl_username": "everyone",
            "sasl_password": SecretStr("p"),
            "principals": {"notifier": KafkaPrincipal(username="n", password=SecretStr("p"))},
        }
    )
    wanted = plan(settings.model_copy(update={"kafka": shared}))
    assert set(wanted.shared["User:everyone"]) == set(KAFKA_ROLES) - {"notifier"}
    assert plan(Settings()).unnamed == list(KAFKA_ROLES)
