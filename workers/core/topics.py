"""Every topic, consumer group and dead-letter topic FlowPay uses, named in one place.

All events of one payment go to one topic keyed by the payment id, so they are ordered in one
partition. Replay depends on that topic keeping everything (``retention.ms=-1``). The saga
orchestrator's commands go to a topic of their own, keyed by the payment id too; nothing is
rebuilt from them, so they are kept a week (time for an executor to come back and catch up).
Changes to merchants' webhook endpoints (``workers.core.endpoint_events``) go to a topic of their
own, keyed by the endpoint id: the notifier rebuilds its endpoints from it, so it keeps everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from workers.core.config import Settings

# Consumer groups, one per consuming service.
GROUP_API: Final = "api"
GROUP_PROCESSOR: Final = "processor"
# The processor's consumer of the orchestrator's commands (its events' consumer is the other).
GROUP_PROCESSOR_COMMANDS: Final = "processor-commands"
GROUP_LEDGER: Final = "ledger"
GROUP_NOTIFIER: Final = "notifier"
GROUP_ORCHESTRATOR: Final = "orchestrator"
# The notifier's consumer of webhook endpoint changes.
GROUP_NOTIFIER_ENDPOINTS: Final = "notifier-endpoints"
ALL_GROUPS: Final = (
    GROUP_API, GROUP_PROCESSOR, GROUP_LEDGER, GROUP_NOTIFIER, GROUP_NOTIFIER_ENDPOINTS,
    GROUP_ORCHESTRATOR,
)  # fmt: skip
# Outbox rows whose type starts so are endpoint changes, for the endpoints topic.
ENDPOINT_EVENT_PREFIX: Final = "webhook_endpoint."
# The operator's tools read in throwaway groups named with these prefixes.
GROUP_PREFIX_DLQ_READER: Final = "flowpay-dlq-reader-"
GROUP_PREFIX_REPLAY: Final = "ledger-replay-"

INFINITE_RETENTION: Final = {"retention.ms": "-1", "retention.bytes": "-1"}
COMMAND_RETENTION: Final = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}


@dataclass(frozen=True)
class Topics:
    payments: str
    dead_letters: str
    commands: str
    webhook_endpoints: str

    def all(self) -> tuple[str, ...]:
        return (self.payments, self.dead_letters, self.commands, self.webhook_endpoints)

    def for_type(self, event_type: str | None, default: str) -> str:
        """Where the relay publishes an outbox row of this type: endpoint changes to their
        topic, anything else to its outbox's ``default``."""
        if event_type is not None and event_type.startswith(ENDPOINT_EVENT_PREFIX):
            return self.webhook_endpoints
        return default


def topics(settings: Settings) -> Topics:
    prefix = settings.kafka.topic_prefix
    return Topics(
        payments=f"{prefix}.payments",
        dead_letters=f"{prefix}.payments.dlq",
        commands=f"{prefix}.commands",
        webhook_endpoints=f"{prefix}.webhook_endpoints",
    )


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic configuration: events, endpoint changes and dead letters (waiting for an
    operator) are kept for ever, commands for a week."""
    names = topics(settings)
    durability = {}
    if settings.kafka.min_insync_replicas is not None:
        durability["min.insync.replicas"] = str(settings.kafka.min_insync_replicas)
    return {
        names.payments: {**INFINITE_RETENTION, **durability},
        names.dead_letters: {**INFINITE_RETENTION, **durability},
        names.commands: {**COMMAND_RETENTION, **durability},
        names.webhook_endpoints: {**INFINITE_RETENTION, **durability},
    }
