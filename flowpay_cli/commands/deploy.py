"""`flowpay deploy credentials`: what docker-compose.yml's services log in and encrypt with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowpay_cli.output import console
from workers.devstack import deploy_credentials

app = typer.Typer(help="Files for deploying FlowPay with docker-compose.yml.")


@app.command("credentials")
def credentials(
    directory: Annotated[
        Path, typer.Argument(help="Where to write them (owner-only), e.g. deploy/secrets.")
    ],
    db_host: Annotated[str, typer.Option("--db-host", help="PostgreSQL's host name.")] = "postgres",
    kafka_host: Annotated[
        str, typer.Option("--kafka-host", help="The broker's host name (its certificate's).")
    ] = "kafka",
) -> None:
    """Generate each role's database and Kafka password, the secrets key and the broker's
    certificates, as env files (made once; run again, it keeps them). Prints no secret."""
    deploy_credentials.make(directory, db_host=db_host, kafka_host=kafka_host)
    console.print(f"credentials in {directory} (owner-only; keep them out of version control)")
