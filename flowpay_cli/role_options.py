"""What every long-running role command accepts: ``--log-format``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from flowpay_cli.context import settings
from workers.core.config import Settings


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


def role_settings(ctx: typer.Context, log_format: LogFormat | None) -> Settings:
    """The settings, with ``--log-format`` (when given) over the configured ``log_format``."""
    config = settings(ctx)
    if log_format is None:
        return config
    return config.model_copy(update={"log_format": log_format.value})
