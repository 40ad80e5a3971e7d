"""`flowpay db` and `flowpay topics`: the schema's migrations and the Kafka topics."""

from __future__ import annotations

from typing import Annotated

import typer

from flowpay_cli.context import settings
from flowpay_cli.output import console, print_json, print_table
from workers.core.db import database_url
from workers.core.kafka import create_topics, describe_topics
from workers.core.topics import topics
from workers.devstack.stack import init_database
from workers.migrations.runner import Migration, migrate, status

db_app = typer.Typer(help="Manage the PostgreSQL schema: versioned migrations.")
topics_app = typer.Typer(help="Manage FlowPay's Kafka topics.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@db_app.command("init")
def db_init(ctx: typer.Context, as_json: Json = False) -> None:
    """Set the database up: apply every pending migration (safe to run again)."""
    _print_applied(init_database(settings(ctx)), as_json=as_json)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context, as_json: Json = False) -> None:
    """Apply every pending migration, all in one transaction: all of them, or none on an error."""
    _print_applied(migrate(database_url(settings(ctx))), as_json=as_json)


@db_app.command("status")
def db_status(ctx: typer.Context, as_json: Json = False) -> None:
    """Every migration of every schema's history: applied or pending."""
    migrations = status(database_url(settings(ctx)))
    if as_json:
        print_json(
            {
                "migrations": [_as_dict(m) for m in migrations],
                "pending": sum(not m.applied for m in migrations),
            }
        )
        return
    rows = [(m.history, m.revision, _state(m), m.description) for m in migrations]
    print_table("migrations", ["history", "revision", "state", "description"], rows)
    pending = sum(not m.applied for m in migrations)
    console.print(f"{pending} pending" if pending else "up to date")


def _print_applied(applied: list[Migration], *, as_json: bool) -> None:
    if as_json:
        print_json({"applied": [_as_dict(m) for m in applied]})
    elif applied:
        rows = [(m.history, m.revision, m.description) for m in applied]
        print_table("migrations applied", ["history", "revision", "description"], rows)
    else:
        console.print("up to date: no migration pending")


def _as_dict(migration: Migration) -> dict[str, object]:
    return {
        "history": migration.history,
        "revision": migration.revision,
        "description": migration.description,
        "state": _state(migration),
    }


def _state(migration: Migration) -> str:
    return "applied" if migration.applied else "pending"


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
