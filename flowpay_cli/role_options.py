"""What every long-running role command accepts (``--log-format``) and checks at start."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from flowpay_cli.context import settings
from workers.core.config import KafkaRole, Settings
from workers.core.kafka import check_access


class LogFormat(StrEnum):
    auto = "auto"
    json = "json"
    text = "text"


LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        help="json, text, or auto: text on a terminal, else JSON (default: log_format).",
    ),
]


def role_settings(
    ctx: typer.Context, log_format: LogFormat | None, kafka_role: KafkaRole | None = None
) -> Settings:
    """The settings, with ``--log-format`` (when given) over the configured ``log_format``.

    With ``kafka_role``, the brokers must accept that role's principal first: a refusal is one
    line and exit 2 now, not a role that looks alive while librdkafka retries for ever.
    """
    config = settings(ctx)
    if kafka_role is not None:
        check_access(config, kafka_role)
    if log_format is None:
        return config
    return config.model_copy(update={"log_format": log_format.value})
