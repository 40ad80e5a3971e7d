"""`flowpay serve-gateway-sim` (being written)."""

from __future__ import annotations

import typer


def serve_gateway_sim(ctx: typer.Context) -> None:
    """Serve the payment gateway simulator."""
    raise typer.Exit(2)
