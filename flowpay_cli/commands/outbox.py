"""`flowpay run-outbox`: the outbox relay."""

from __future__ import annotations

import typer

from flowpay_cli.role_options import LogFormatOption, role_settings
from workers.outbox.relay import serve


def run_outbox(ctx: typer.Context, log_format: LogFormatOption = None) -> None:
    """Relay stored events from the outboxes to Kafka."""
    serve(role_settings(ctx, log_format, "outbox"))
