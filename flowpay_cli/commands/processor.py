"""`flowpay run-processor`."""

from __future__ import annotations

import typer

from flowpay_cli.context import settings
from workers.processor.worker import serve


def run_processor(ctx: typer.Context) -> None:
    """Run the payment state machine against the gateway (and its reconciler)."""
    serve(settings(ctx))
