"""Every topic, consumer group and dead-letter topic FlowPay uses, named in one place.

All events of one payment go to one topic keyed by the payment id, so they are ordered in one
partition. Replay depends on that topic keeping everything (``retention.ms=-1``). Changes to
merchants' webhook endpoints (``workers.core.endpoint_events``) go to a topic of their own,
keyed by the endpoint id: the notifier rebuilds its endpoints from it, so it keeps everything too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from workers.core.config import Settings

# Consumer groups, one per consuming service.
GROUP_API: Final = "api"
GROUP_PROCESSOR: Final = "processor"
GROUP_LEDGER: Final = "ledger"
GROUP_NOTIFIER: Final = "notifier"
# The notifier's consumer of webhook endpoint changes.
GROUP_NOTIFIER_ENDPOINTS: Final = "notifier-endpoints"
ALL_GROUPS: Final = (
    GROUP_API, GROUP_PROCESSOR, GROUP_LEDGER, GROUP_NOTIFIER, GROUP_NOTIFIER_ENDPOINTS
)  # fmt: skip
# Outbox rows whose type starts so are endpoint changes, for the endpoints topic.
ENDPOINT_EVENT_PREFIX: Final = "webhook_endpoint."
# The operator's tools read in throwaway groups named with these prefixes.
GROUP_PREFIX_DLQ_READER: Final = "flowpay-dlq-reader-"
GROUP_PREFIX_REPLAY: Final = "ledger-replay-"

INFINITE_RETENTION: Final = {"retention.ms": "-1", "retention.bytes": "-1"}


@dataclass(frozen=True)
class Topics:
    payments: str
    dead_letters: str
    webhook_endpoints: str

    def all(self) -> tuple[str, ...]:
        return (self.payments, self.dead_letters, self.webhook_endpoints)

    def for_type(self, event_type: str | None) -> str:
        """Where the relay publishes an outbox row of this type."""
        if event_type is not None and event_type.startswith(ENDPOINT_EVENT_PREFIX):
            return self.webhook_endpoints
        return self.payments


def topics(settings: Settings) -> Topics:
    prefix = settings.kafka.topic_prefix
    return Topics(
        payments=f"{prefix}.payments",
        dead_letters=f"{prefix}.payments.dlq",
        webhook_endpoints=f"{prefix}.webhook_endpoints",
    )


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic configuration: all keep everything; dead letters wait for an operator."""
    config = dict(INFINITE_RETENTION)
    if settings.kafka.min_insync_replicas is not None:
        config["min.insync.replicas"] = str(settings.kafka.min_insync_replicas)
    return {name: dict(config) for name in topics(settings).all()}
