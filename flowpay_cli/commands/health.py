"""`flowpay health ROLE`: a container health check for roles without an HTTP port."""

from __future__ import annotations

from typing import Annotated

import typer

from flowpay_cli.output import console, error_line
from workers.core.heartbeat import heartbeat_age

# Docker reserves exit code 2 for health checks; any other non-zero code means unhealthy.
EXIT_UNHEALTHY = 1


def health(
    role: Annotated[
        str, typer.Argument(help="outbox, processor, ledger, notifier or orchestrator")
    ],
    max_age: Annotated[
        float, typer.Option("--max-age", min=0, help="Seconds a beat stays fresh.")
    ] = 30.0,
) -> None:
    """Exit 0 when ROLE's loop has beaten within --max-age seconds, else 1."""
    age = heartbeat_age(role)
    if age is None or age > max_age:
        seen = "no heartbeat yet" if age is None else f"last heartbeat {age:.0f}s ago"
        error_line(f"{role}: {seen} (limit {max_age:.0f}s)")
        raise typer.Exit(EXIT_UNHEALTHY)
    console.print(f"{role}: alive ({age:.1f}s ago)")
