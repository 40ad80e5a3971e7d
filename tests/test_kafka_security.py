"""FlowPay on a secured broker: SASL_SSL, SCRAM-SHA-512, and ACLs that deny what they do not allow.

The broker is the one `flowpay dev up --secure` starts (tests/helpers/secure_kafka.py): its own
CA and certificate, SCRAM users made by the storage tool's --add-scram, StandardAuthorizer with
allow.everyone.if.no.acl.found=false, and each role as its own principal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    ScramMechanism,
    UserScramCredentialDeletion,
)
from confluent_kafka.cimpl import NewTopic

from tests.conftest import ROOT, flowpay, override
from tests.helpers.flow import flow
from tests.helpers.receiver import receiver
from tests.helpers.secure_kafka import SecureBroker, secured_prefix, shared_secure_broker
from tests.helpers.servers import free_port
from tests.helpers.shared_stack import clean_env, shared_dir
from tests.helpers.waiting import wait_for
from workers.core.config import KafkaRole, Settings
from workers.core.db import admin_url
from workers.core.errors import KafkaAccessError, TransientError
from workers.core.kafka import (
    KafkaError,
    KafkaException,
    check_access,
    make_admin,
    make_consumer,
    make_producer,
    produce_sync,
)
from workers.core.topics import GROUP_PREFIX_DLQ_READER, topics
from workers.devstack import secure
from workers.devstack.paths import StackPaths
from workers.devstack.tls import make_broker_certificates

FAST_NOTIFIER = {"FLOWPAY_NOTIFIER__POLL_INTERVAL_S": "0.1", "FLOWPAY_LOG_FORMAT": "json"}


@pytest.fixture(scope="module")
def broker(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[SecureBroker]:
    shared = shared_dir(tmp_path_factory, worker_id, "secure-kafka")
    with shared_secure_broker(shared, base_settings) as started:
        yield started


@pytest.fixture
def secured(broker: SecureBroker, settings: Settings) -> Iterator[Settings]:
    with secured_prefix(broker, settings) as prepared:
        yield prepared


def _passwords(broker: SecureBroker) -> list[str]:
    return list(secure.scram_users(broker.settings).values())


def test_the_payment_flow_runs_with_each_role_as_its_own_principal(
    broker: SecureBroker, secured: Settings, tmp_path: Path
) -> None:
    # Each principal may read in its own consumer group only and only the relay's may write the
    # payments topic, so a role that authenticated as any other principal would stall the flow.
    env = {"FLOWPAY_CONFIG": str(broker.config), **FAST_NOTIFIER}
    with (
        broker.principals(),
        receiver(free_port()) as hook,
        flow(secured, tmp_path, extra_env=env) as f,
    ):
        hook.secret = f.start_downstream(hook.url)
        payment = f.pay()
        f.wait_for(payment["id"], lambda p: p["status"] == "succeeded")
        delivered = hook.wait_for(1)
        wait_for(lambda: _ledger_applied(secured, payment["id"]) >= 2, 30, "the ledger")
    assert delivered[0].signature_ok
    assert delivered[0].body["data"]["id"] == payment["id"]
    logs = [*tmp_path.glob("*.log"), StackPaths.of(broker.settings).kafka_log]
    for path in logs:
        text = path.read_text()
        assert all(password not in text for password in _passwords(broker)), path.name


def _ledger_applied(settings: Settings, payment_id: str) -> int:
    with psycopg.connect(admin_url(settings)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger.events WHERE payment_id = %s", (payment_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_notifier_principal_is_refused_writing_the_payments_topic(secured: Settings) -> None:
    names = topics(secured)
    producer = make_producer(secured, "notifier")
    with pytest.raises(TransientError, match="Topic authorization failed"):
        produce_sync(producer, names.payments, key=b"pay_x", value=b"forged", timeout_s=15)
    # The dead-letter topic, which every consumer may write, takes the same producer's message.
    produce_sync(producer, names.dead_letters, key=b"pay_x", value=b"dead", timeout_s=15)


def test_a_consumer_principal_reads_in_its_own_group_only(secured: Settings) -> None:
    consumer = make_consumer(secured, "ledger", "notifier")
    consumer.subscribe([topics(secured).payments])
    errors: list[int] = []
    try:

        def refused() -> bool:
            message = consumer.poll(0.5)
            error = None if message is None else message.error()
            if error is not None:
                errors.append(error.code())
            return KafkaError.GROUP_AUTHORIZATION_FAILED in errors

        wait_for(refused, 30, "the group to be refused")
    finally:
        consumer.close()


def test_only_the_operator_administers_topics(secured: Settings) -> None:
    name = f"{secured.kafka.topic_prefix}.extra"
    notifier, operator = make_admin(secured, "notifier"), make_admin(secured, "operator")
    with pytest.raises(KafkaException) as refused:
        notifier.create_topics([NewTopic(name, 1, 1)])[name].result()
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    operator.create_topics([NewTopic(name, 1, 1)])[name].result()


def test_a_wrong_password_is_one_line_and_exit_2_not_a_hang(
    broker: SecureBroker, secured: Settings
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    env = {**broker.env(secured), "FLOWPAY_KAFKA__PRINCIPALS__OPERATOR__PASSWORD": wrong}
    done = flowpay("topics", "list", env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Kafka refused the operator client (user flowpay-operator)" in lines[0]
    assert "invalid credentials" in lines[0]
    assert wrong not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("command", "role"), [("run-outbox", "outbox"), ("run-notifier", "notifier")]
)
def test_a_role_with_a_wrong_password_exits_with_a_clear_line(
    broker: SecureBroker, secured: Settings, command: str, role: str
) -> None:
    # The relay makes its producer only once an event waits: without a check at start it would
    # sit idle, looking healthy, until the first payment.
    env = {**broker.env(secured), f"FLOWPAY_KAFKA__PRINCIPALS__{role.upper()}__PASSWORD": "no"}
    done = subprocess.run(
        [sys.executable, "-m", "flowpay_cli", command],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Kafka refused the {role} client (user flowpay-{role})" in done.stderr


def test_acls_print_shows_least_privilege_without_a_secret(
    broker: SecureBroker, secured: Settings
) -> None:
    done = flowpay("kafka", "acls", "apply", "--print", "--json", env=broker.env(secured))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["applied"] is False
    writers = {
        a["role"]
        for a in printed["acls"]
        if a["operation"] == "write" and a["name"] == topics(secured).payments
    }
    assert writers == {"outbox", "operator"}
    assert printed["roles_without_principal"] == []
    assert printed["shared_principals"] == {}
    assert all(p not in done.stdout + done.stderr for p in _passwords(broker))


def test_plain_dev_up_refuses_while_the_secure_broker_runs(broker: SecureBroker) -> None:
    # The same ports, a broker that wants TLS and SCRAM: PLAINTEXT clients would only time out.
    done = flowpay(
        "--config", str(broker.user_config), "dev", "up", "--infra-only", env=clean_env()
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the local broker runs SASL_SSL, not PLAINTEXT" in done.stderr


def test_dev_up_adds_a_principal_that_came_after_the_storage_was_formatted(
    broker: SecureBroker,
) -> None:
    # --add-scram works at format time only. The orchestrator's principal stands for a role
    # FlowPay gains later: gone from the broker, `dev up` brings it back. The payment flow's
    # test runs an orchestrator on this broker: never at the same time (principals()).
    user = secure.username("orchestrator")
    admin = make_admin(secure.as_broker(broker.settings), "operator")
    deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
    with broker.principals(changing=True):
        admin.alter_user_scram_credentials([deletion])[user].result()
        wait_for(lambda: _refused(broker.settings, "orchestrator"), 30, "the deletion to apply")
        done = flowpay(
            "--config", str(broker.user_config), "dev", "up", "--secure", "--infra-only",
            env=clean_env(), timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        check_access(broker.settings, "orchestrator")


def _refused(settings: Settings, role: KafkaRole) -> bool:
    try:
        check_access(settings, role)
    except KafkaAccessError:
        return True
    return False


def test_the_operator_replays_a_dead_letter_to_the_payments_topic(
    broker: SecureBroker, secured: Settings
) -> None:
    names = topics(secured)
    headers = [("dlq_topic", names.payments.encode()), ("dlq_group", b"notifier")]
    letter = produce_sync(
        make_producer(secured, "notifier"), names.dead_letters,
        key=b"pay_dead", value=b"{}", headers=headers, timeout_s=15,
    )  # fmt: skip
    letter_id = f"{letter.partition()}:{letter.offset()}"
    done = flowpay("dlq", "replay", letter_id, env=broker.env(secured))
    assert done.returncode == 0, done.stdout + done.stderr
    # Read back as the operator does, in one of its throwaway groups.
    reader = make_consumer(secured, f"{GROUP_PREFIX_DLQ_READER}{uuid.uuid4().hex}", "operator")
    reader.subscribe([names.payments])
    replayed: list[bytes | None] = []
    try:

        def arrived() -> bool:
            message = reader.poll(0.5)
            if message is not None and message.error() is None:
                replayed.append(message.key())
            return b"pay_dead" in replayed

        wait_for(arrived, 30, "the replayed dead letter")
    finally:
        reader.close()


def test_a_broker_certificate_from_another_ca_is_a_clear_error(
    secured: Settings, tmp_path: Path
) -> None:
    other = make_broker_certificates(tmp_path / "other-ca")
    untrusting = override(secured, "kafka", ssl_ca_location=other.ca)
    with pytest.raises(KafkaAccessError, match="certificate verify failed"):
        check_access(untrusting, "operator")
