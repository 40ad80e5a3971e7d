"""`flowpay run-outbox`: the outbox relay."""

from __future__ import annotations

import typer

from flowpay_cli.context import settings
from workers.outbox.relay import serve


def run_outbox(ctx: typer.Context) -> None:
    """Relay stored events from the outboxes to Kafka."""
    serve(settings(ctx))
