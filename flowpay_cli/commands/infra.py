"""`flowpay db` and `flowpay topics`: the schema's migrations and the Kafka topics."""

from __future__ import annotations

from typing import Annotated

import typer

from flowpay_cli.context import settings
from flowpay_cli.output import Json, console, print_json, print_table
from workers.core.config import DATABASE_ROLES, Settings
from workers.core.db import database_url, role_name
from workers.core.db_roles import database_name, init_statements, login_users
from workers.core.kafka import create_topics, describe_topics
from workers.core.topics import topics
from workers.migrations import setup
from workers.migrations.runner import Migration, migrate, status

db_app = typer.Typer(help="Manage the PostgreSQL schema: versioned migrations.")
topics_app = typer.Typer(help="Manage FlowPay's Kafka topics.")


@db_app.command("init")
def db_init(
    ctx: typer.Context,
    print_sql: Annotated[
        bool,
        typer.Option(
            "--print-sql",
            help="Print what it runs as the administrator, for a DBA to run, and change nothing.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Create FlowPay's roles (one per service, and the owner) and let only them connect, as
    database.admin_url; then apply every pending migration as the owner (safe to run again)."""
    config = settings(ctx)
    if print_sql:
        _print_init_sql(config)
        return
    _print_applied(setup.init_database(config), as_json=as_json)


def _print_init_sql(config: Settings) -> None:
    statements = init_statements(config)
    users = [role_name(r) for r in DATABASE_ROLES] + list(login_users(config))
    lines = [
        "-- FlowPay: its roles, who may connect, and the owner's takeover of what exists.",
        f"-- Run as a superuser or a role with CREATEROLE, connected to {database_name(config)}.",
        "BEGIN;",
        *(f"{s.as_string(None)};" for s in statements),
        "COMMIT;",
        "-- Then give each login its password (psql sends it hashed), for example:",
        *(f"--   \\password {user}" for user in users),
        "-- and, as the owner: flowpay db migrate",
    ]
    typer.echo("\n".join(lines))


@db_app.command("migrate")
def db_migrate(ctx: typer.Context, as_json: Json = False) -> None:
    """Apply every pending migration, all in one transaction: all of them, or none on an error;
    then make the roles' privileges what FlowPay's table says. Runs as the owner."""
    _print_applied(migrate(database_url(settings(ctx), "owner")), as_json=as_json)


@db_app.command("status")
def db_status(ctx: typer.Context, as_json: Json = False) -> None:
    """Every migration of every schema's history: applied or pending."""
    migrations = status(database_url(settings(ctx), "owner"))
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
