"""The local broker secured as a managed cluster would be: SASL_SSL, SCRAM-SHA-512 and ACLs.

``flowpay dev up --secure`` keeps everything under ``<dev.home>/secure/`` (owner-only): a CA and
the broker's certificate, one random password per principal (the broker's own, a super user,
and one per role), and ``flowpay.toml``, the configuration the roles run with: the user's own
configuration plus the ``[kafka]`` keys that reach this broker, each role as its own principal.
"""

from __future__ import annotations

import json
import logging
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from workers.core import kafka_acls
from workers.core.config import KAFKA_ROLES, KafkaPrincipal, KafkaRole, Settings
from workers.core.errors import StackError
from workers.core.kafka import KafkaError, KafkaException, make_admin
from workers.devstack.paths import StackPaths, write_private
from workers.devstack.tls import BrokerCertificates, make_broker_certificates

log = logging.getLogger(__name__)

PROTOCOL = "SASL_SSL"
MECHANISM = "SCRAM-SHA-512"
# The broker's own principal: its connections to itself and its controller; a super user.
BROKER_USER = "broker"
# What the storage tool's --add-scram uses when not told: the same for users added later.
_SCRAM_ITERATIONS = 4096

# Clients: TLS and SCRAM-SHA-512 only. The controller listener stays on loopback; there the
# broker logs in to its controller with SASL/PLAIN, whose one user is defined right here (it
# needs no metadata, unlike SCRAM), so that no unauthenticated principal must be a super user.
_SASL_SSL = """\
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required \
username="{user}" password="{password}";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required \
username="{user}" password="{password}" user_{user}="{password}";
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{user}
allow.everyone.if.no.acl.found=false
"""


def username(role: KafkaRole) -> str:
    return f"flowpay-{role}"


@dataclass(frozen=True)
class SecureFiles:
    directory: Path

    @classmethod
    def of(cls, settings: Settings) -> SecureFiles:
        return cls(StackPaths.of(settings).home / "secure")

    @property
    def tls(self) -> BrokerCertificates:
        return BrokerCertificates.under(self.directory / "tls")

    @property
    def passwords(self) -> Path:
        return self.directory / "passwords.json"

    @property
    def config(self) -> Path:
        return self.directory / "flowpay.toml"


def prepare(settings: Settings, config_file: Path | None) -> Path:
    """Certificates and passwords (made once) and the roles' configuration; returns its path."""
    if settings.kafka.bootstrap_servers is not None:
        raise StackError(
            "dev up --secure starts the local broker, but kafka.bootstrap_servers names another"
        )
    files = SecureFiles.of(settings)
    files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files.directory.chmod(0o700)
    if not files.tls.exist():
        make_broker_certificates(files.tls.ca.parent)
    passwords = _passwords(files)
    table = _user_config(config_file)
    table.setdefault("dev", {})["home"] = str(StackPaths.of(settings).home)
    table.setdefault("kafka", {}).update(
        security_protocol=PROTOCOL,
        sasl_mechanism=MECHANISM,
        ssl_ca_location=str(files.tls.ca),
        principals={r: {"username": username(r), "password": passwords[r]} for r in KAFKA_ROLES},
    )
    write_private(files.config, tomli_w.dumps(table).encode())
    return files.config


def broker_password(settings: Settings) -> str:
    return _stored_passwords(SecureFiles.of(settings))[BROKER_USER]


def scram_users(settings: Settings) -> dict[str, str]:
    """Every principal's name and password, the broker's first."""
    stored = _stored_passwords(SecureFiles.of(settings))
    return {BROKER_USER: stored[BROKER_USER]} | {username(r): stored[r] for r in KAFKA_ROLES}


def as_broker(settings: Settings) -> Settings:
    """``settings`` with the operator's tools acting as the broker's super user.

    Only the super user can create the first ACLs, the operator's own among them.
    """
    root = KafkaPrincipal(username=BROKER_USER, password=SecretStr(broker_password(settings)))
    return kafka_acls.as_administrator(settings, root)


def broker_properties(settings: Settings) -> str:
    """The secure broker's listener, TLS, SASL and authorizer lines of its server.properties."""
    tls = SecureFiles.of(settings).tls
    return _SASL_SSL.format(
        user=BROKER_USER, password=broker_password(settings), keystore=tls.keystore, ca=tls.ca
    )


def add_scram_arguments(settings: Settings) -> list[str]:
    """The storage tool's --add-scram arguments: every principal, made at format time."""
    return [
        f"--add-scram={MECHANISM}=[name={name},password={password}]"
        for name, password in scram_users(settings).items()
    ]


def admit_principals(settings: Settings) -> None:
    """Each role's SCRAM user and ACLs, as the broker's super user (idempotent)."""
    _add_missing_users(settings)
    # The operator may not create ACLs, its own included.
    kafka_acls.apply(as_broker(settings), kafka_acls.plan(settings).grants)


def _add_missing_users(settings: Settings) -> None:
    """SCRAM users for principals that came after the storage was formatted (a new role).

    ``--add-scram`` works at format time only; later ones go through the Admin API.
    """
    admin = make_admin(as_broker(settings), "operator")
    users = scram_users(settings)
    missing: list[str] = []
    described = admin.describe_user_scram_credentials(list(users))
    assert isinstance(described, dict)  # one future per user named
    for name, future in described.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                raise StackError(f"cannot look up Kafka user {name}: {exc.args[0].str()}") from None
            missing.append(name)
    if not missing:
        return
    mechanism = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _SCRAM_ITERATIONS)
    additions: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(n, mechanism, users[n].encode()) for n in missing
    ]
    for name, future in admin.alter_user_scram_credentials(additions).items():
        try:
            future.result()
        except KafkaException as exc:
            raise StackError(f"cannot add Kafka user {name}: {exc.args[0].str()}") from None
    log.info("added Kafka users %s", ", ".join(missing))


def _passwords(files: SecureFiles) -> dict[str, str]:
    stored = _stored_passwords(files) if files.passwords.exists() else {}
    wanted = [BROKER_USER, *KAFKA_ROLES]
    if all(name in stored for name in wanted):
        return stored
    # URL-safe characters only: they go into JAAS and --add-scram arguments unquoted.
    made = {name: stored.get(name) or secrets.token_urlsafe(24) for name in wanted}
    write_private(files.passwords, json.dumps(made, indent=2).encode())
    return made


def _stored_passwords(files: SecureFiles) -> dict[str, str]:
    try:
        stored = json.loads(files.passwords.read_text())
    except (OSError, ValueError):
        raise StackError(
            f"no usable {files.passwords}: run `flowpay dev up --secure` to make it"
        ) from None
    return {str(k): str(v) for k, v in stored.items()}


def _user_config(config_file: Path | None) -> dict[str, Any]:
    if config_file is None or not config_file.is_file():
        return {}
    try:
        return tomllib.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise StackError(f"cannot read {config_file}: {exc}") from None
