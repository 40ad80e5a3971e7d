"""`flowpay serve-gateway-sim`: the stand-in for the external card gateway."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, cast

import typer

from flowpay_cli.role_options import LogFormatOption, role_settings
from workers.core.logs import setup_logging
from workers.gateway_sim.app import SimConfig
from workers.gateway_sim.faults import ENDPOINTS, Endpoint, FaultSettings
from workers.gateway_sim.server import serve


class Faulted(StrEnum):
    """The choices of --faulted: the simulator's faultable endpoints."""

    CHARGES = "charges"
    REFUNDS = "refunds"
    AUTHORIZATIONS = "authorizations"
    CAPTURES = "captures"
    VOIDS = "voids"
    PAYOUTS = "payouts"


def serve_gateway_sim(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: gateway_sim.host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: gateway_sim.port).")
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(
            help="SQLite file (default: gateway_sim.db_path, else <dev.home>/gateway-sim.sqlite3)."
        ),
    ] = None,
    latency_ms: Annotated[
        float, typer.Option(min=0.0, help="Added to every charge, refund and lookup.")
    ] = 0.0,
    latency_jitter_ms: Annotated[
        float, typer.Option(min=0.0, help="Latency varies by up to this, either way.")
    ] = 0.0,
    timeout_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of charges/refunds held for timeout_hold_s, then done."
        ),
    ] = 0.0,
    lost_ack_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of charges/refunds done, then the connection dropped."
        ),
    ] = 0.0,
    error_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of charges/refunds answered 503, not done."),
    ] = 0.0,
    faulted: Annotated[
        list[Faulted] | None,
        typer.Option(help="Requests the fault rates apply to (repeatable; default: both)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the fault decisions, for reproducible runs.")
    ] = None,
    log_format: LogFormatOption = None,
) -> None:
    """Serve the payment gateway simulator (charges and refunds kept in SQLite)."""
    config = role_settings(ctx, log_format)
    setup_logging(config.log_level, "gateway-sim", config.log_format)
    sim = config.gateway_sim
    faults = FaultSettings(
        latency_ms=latency_ms,
        latency_jitter_ms=latency_jitter_ms,
        timeout_rate=timeout_rate,
        lost_ack_rate=lost_ack_rate,
        error_rate=error_rate,
        faulted=cast(list[Endpoint], [f.value for f in faulted]) if faulted else list(ENDPOINTS),
    )
    serve(
        config,
        SimConfig(
            db_path=db or sim.db_path or config.dev.home / "gateway-sim.sqlite3",
            faults=faults,
            seed=seed,
            timeout_hold_s=sim.timeout_hold_s,
        ),
        host=host or sim.host,
        port=port or sim.port,
    )
