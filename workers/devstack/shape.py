"""The local stack's shape: how many Kafka nodes, and whether PostgreSQL has a standby.

``flowpay dev up --brokers 3 --pg-standby`` records the shape it made under ``dev.home``, so
that the later ``dev`` commands (status, failover, down) and the roles the supervisor starts
all see the stack it is, without the flags repeated. What the settings name themselves
(``dev.kafka_brokers``, ``dev.pg_standby`` in flowpay.toml or ``FLOWPAY_DEV__*``) is kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from pydantic import ValidationError

from workers.core.config import Settings
from workers.core.errors import ConfigError, StackError
from workers.devstack.paths import StackPaths

FILE = "shape.json"


@dataclass(frozen=True)
class Shape:
    kafka_brokers: int = 1
    pg_standby: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Shape:
        return cls(settings.dev.kafka_brokers, settings.dev.pg_standby)


def recorded(settings: Settings) -> Shape | None:
    """The shape ``dev up`` last made in this stack's home, if any."""
    path = StackPaths.of(settings).home / FILE
    try:
        return Shape(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise StackError(f"{path} is damaged ({exc}): delete it and run flowpay dev up") from None


def applied(
    settings: Settings, *, brokers: int | None = None, pg_standby: bool | None = None
) -> Settings:
    """``settings`` in the stack's shape: the flags given, else what the settings set
    themselves, else what ``dev up`` recorded, else the defaults."""
    chosen = {
        key: flag
        for key, flag in (("kafka_brokers", brokers), ("pg_standby", pg_standby))
        if flag is not None
    }
    known = recorded(settings)
    if known is not None:
        explicit = settings.dev.model_fields_set
        chosen = {k: v for k, v in asdict(known).items() if k not in explicit} | chosen
    if not chosen:
        return settings
    # Validated again: 2 brokers, or ports that overlap, are refused as from flowpay.toml.
    try:
        dev = type(settings.dev).model_validate(settings.dev.model_dump() | chosen)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        raise ConfigError(f"dev: {first['msg']}") from None
    return settings.model_copy(update={"dev": dev})


def record(settings: Settings) -> None:
    home = StackPaths.of(settings).home
    home.mkdir(parents=True, exist_ok=True)
    (home / FILE).write_text(json.dumps(asdict(Shape.of(settings))) + "\n")


def environment(settings: Settings) -> dict[str, str]:
    """The shape as ``FLOWPAY_*`` variables: for the roles the supervisor starts."""
    return {
        "FLOWPAY_DEV__KAFKA_BROKERS": str(settings.dev.kafka_brokers),
        "FLOWPAY_DEV__PG_STANDBY": "true" if settings.dev.pg_standby else "false",
    }
