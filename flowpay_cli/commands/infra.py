"""`flowpay db` and `flowpay topics`: the schema and the Kafka topics."""

from __future__ import annotations

from typing import Annotated

import typer

from flowpay_cli.context import settings
from flowpay_cli.output import console, print_json, print_table
from workers.core.kafka import create_topics, describe_topics
from workers.core.topics import topics
from workers.devstack.stack import init_database

db_app = typer.Typer(help="Manage the PostgreSQL schema.")
topics_app = typer.Typer(help="Manage FlowPay's Kafka topics.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@db_app.command("init")
def db_init(ctx: typer.Context) -> None:
    """Apply schema.sql (idempotent: safe to run again)."""
    init_database(settings(ctx))
    console.print("schema applied")


@topics_app.command("create")
def topics_create(ctx: typer.Context, as_json: Json = False) -> None:
    """Create every topic with the configured partition count (idempotent)."""
    config = settings(ctx)
    result = create_topics(config)
    if as_json:
        print_json(result)
        return
    print_table("topics", ["topic", "result"], result.items())


@topics_app.command("list")
def topics_list(ctx: typer.Context, as_json: Json = False) -> None:
    """FlowPay's topics, their partitions and retention."""
    config = settings(ctx)
    described = describe_topics(config, topics(config).all())
    if as_json:
        print_json(described)
        return
    print_table(
        "topics",
        ["topic", "partitions", "retention.ms"],
        [(name, d["partitions"], d["retention.ms"]) for name, d in described.items()],
    )
