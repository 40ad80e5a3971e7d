"""Every topic, consumer group and dead-letter topic FlowPay uses, named in one place.

All events of one payment go to one topic keyed by the payment id, so they are ordered in one
partition. Replay depends on that topic keeping everything (``retention.ms=-1``).
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
ALL_GROUPS: Final = (GROUP_API, GROUP_PROCESSOR, GROUP_LEDGER, GROUP_NOTIFIER)
# The operator's tools read in throwaway groups named with these prefixes.
GROUP_PREFIX_DLQ_READER: Final = "flowpay-dlq-reader-"
GROUP_PREFIX_REPLAY: Final = "ledger-replay-"

INFINITE_RETENTION: Final = {"retention.ms": "-1", "retention.bytes": "-1"}


@dataclass(frozen=True)
class Topics:
    payments: str
    dead_letters: str

    def all(self) -> tuple[str, ...]:
        return (self.payments, self.dead_letters)


def topics(settings: Settings) -> Topics:
    prefix = settings.kafka.topic_prefix
    return Topics(payments=f"{prefix}.payments", dead_letters=f"{prefix}.payments.dlq")


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic configuration: both keep everything; dead letters wait for an operator."""
    names = topics(settings)
    config = dict(INFINITE_RETENTION)
    if settings.kafka.min_insync_replicas is not None:
        config["min.insync.replicas"] = str(settings.kafka.min_insync_replicas)
    return {names.payments: dict(config), names.dead_letters: dict(config)}
