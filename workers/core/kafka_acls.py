"""Least-privilege Kafka ACLs for each role's principal, from one table.

Only the relay writes the event and command topics; each consumer reads them in its own group
only and may write the dead-letter topic; only the operator administers topics. The brokers must
deny what no ACL allows (``allow.everyone.if.no.acl.found=false``) for this to hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from workers.core.config import KAFKA_ROLES, KafkaPrincipal, KafkaRole, Settings
from workers.core.errors import StackError
from workers.core.kafka import group_id, make_admin
from workers.core.kafka_security import credentials
from workers.core.topics import (
    GROUP_API,
    GROUP_LEDGER,
    GROUP_NOTIFIER,
    GROUP_NOTIFIER_ENDPOINTS,
    GROUP_ORCHESTRATOR,
    GROUP_PREFIX_DLQ_READER,
    GROUP_PREFIX_REPLAY,
    GROUP_PROCESSOR,
    GROUP_PROCESSOR_COMMANDS,
    topics,
)

TopicKey = Literal["payments", "commands", "dead_letters", "webhook_endpoints"]


@dataclass(frozen=True)
class Access:
    reads: tuple[TopicKey, ...] = ()
    writes: tuple[TopicKey, ...] = ()
    groups: tuple[str, ...] = ()  # consumer groups, by logical name
    group_prefixes: tuple[str, ...] = ()  # throwaway groups, by the start of their name
    administers_topics: bool = False


_DLQ: tuple[TopicKey, ...] = ("dead_letters",)

# What each role may do. A new topic or consumer is one line here.
ACCESS: dict[KafkaRole, Access] = {
    "outbox": Access(writes=("payments", "commands", "webhook_endpoints")),
    "api": Access(reads=("payments",), groups=(GROUP_API,), writes=_DLQ),
    "processor": Access(
        reads=("payments", "commands"),
        groups=(GROUP_PROCESSOR, GROUP_PROCESSOR_COMMANDS),
        writes=_DLQ,
    ),
    "ledger": Access(reads=("payments",), groups=(GROUP_LEDGER,), writes=_DLQ),
    "notifier": Access(
        reads=("payments", "webhook_endpoints"),
        groups=(GROUP_NOTIFIER, GROUP_NOTIFIER_ENDPOINTS),
        writes=_DLQ,
    ),
    # The saga orchestrator: it writes its commands through its outbox and the relay.
    "orchestrator": Access(
        reads=("payments", "commands"), groups=(GROUP_ORCHESTRATOR,), writes=_DLQ
    ),
    # Topics, `dlq list` and `replay` (reading), and `dlq replay`, which re-publishes a dead
    # letter to the topic it came from: the one write to the event log besides the relay's.
    "operator": Access(
        reads=("payments", "dead_letters"),
        writes=("payments",),
        group_prefixes=(GROUP_PREFIX_DLQ_READER, GROUP_PREFIX_REPLAY),
        administers_topics=True,
    ),
}

_TOPIC_ADMIN = (
    AclOperation.CREATE,
    AclOperation.DELETE,
    AclOperation.ALTER,
    AclOperation.ALTER_CONFIGS,
    AclOperation.DESCRIBE,
    AclOperation.DESCRIBE_CONFIGS,
)


@dataclass(frozen=True)
class Grant:
    """One ACL: ``role``'s principal may do ``operation`` on a resource."""

    role: KafkaRole
    principal: str
    resource: str  # topic | group
    pattern: str  # literal | prefixed
    name: str
    operation: str

    def binding(self) -> AclBinding:
        return AclBinding(
            ResourceType[self.resource.upper()],
            self.name,
            ResourcePatternType[self.pattern.upper()],
            self.principal,
            "*",
            AclOperation[self.operation.upper()],
            AclPermissionType.ALLOW,
        )


@dataclass(frozen=True)
class Plan:
    grants: list[Grant]
    unnamed: list[KafkaRole]  # roles with no principal configured: given nothing
    shared: dict[str, list[KafkaRole]]  # a principal several roles use gets all their rights


def topic_names(settings: Settings) -> dict[TopicKey, str]:
    names = topics(settings)
    return {
        "payments": names.payments,
        "commands": names.commands,
        "dead_letters": names.dead_letters,
        "webhook_endpoints": names.webhook_endpoints,
    }


def plan(settings: Settings) -> Plan:
    """Every ACL the table asks for, for the principals the settings name."""
    grants: list[Grant] = []
    unnamed: list[KafkaRole] = []
    users: dict[str, list[KafkaRole]] = {}
    for role in KAFKA_ROLES:
        principal = credentials(settings, role)
        if principal is None:
            unnamed.append(role)
            continue
        user = f"User:{principal.username}"
        users.setdefault(user, []).append(role)
        grants.extend(_grants(settings, role, user, ACCESS[role]))
    shared = {user: roles for user, roles in users.items() if len(roles) > 1}
    return Plan(grants, unnamed, shared)


def _grants(settings: Settings, role: KafkaRole, user: str, access: Access) -> Iterable[Grant]:
    names = topic_names(settings)
    for key in access.reads:
        yield Grant(role, user, "topic", "literal", names[key], "read")
    for key in access.writes:
        yield Grant(role, user, "topic", "literal", names[key], "write")
    for group in access.groups:
        yield Grant(role, user, "group", "literal", group_id(settings, group), "read")
    for start in access.group_prefixes:
        yield Grant(role, user, "group", "prefixed", group_id(settings, start), "read")
    if access.administers_topics:
        prefix = f"{settings.kafka.topic_prefix}."
        for operation in _TOPIC_ADMIN:
            yield Grant(role, user, "topic", "prefixed", prefix, operation.name.lower())


def as_administrator(settings: Settings, admin: KafkaPrincipal | None = None) -> Settings:
    """``settings`` with the operator's clients acting as ``admin`` (default ``kafka.admin``);
    unchanged when there is none."""
    kafka = settings.kafka
    admin = admin or kafka.admin
    if admin is None:
        return settings
    principals = {**kafka.principals, "operator": admin}
    return settings.model_copy(
        update={"kafka": kafka.model_copy(update={"principals": principals})}
    )


def apply(settings: Settings, grants: list[Grant]) -> int:
    """Create the ACLs (Kafka keeps one copy of each, so applying again changes nothing).

    Runs as ``kafka.admin`` when set, else the operator's principal: it must be allowed to alter
    the cluster's ACLs.
    """
    if not grants:
        return 0
    admin = make_admin(as_administrator(settings), "operator")
    futures = admin.create_acls([grant.binding() for grant in grants], request_timeout=30)
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            raise StackError(f"cannot create Kafka ACLs: {exc.args[0].str()}") from None
    return len(grants)
