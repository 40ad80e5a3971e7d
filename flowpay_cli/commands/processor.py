"""`flowpay run-processor`."""

from __future__ import annotations

import typer

from flowpay_cli.role_options import LogFormatOption, role_settings
from workers.processor.worker import serve


def run_processor(ctx: typer.Context, log_format: LogFormatOption = None) -> None:
    """Run the payment state machine against the gateway (and its reconciler)."""
    serve(role_settings(ctx, log_format, "processor"))
