"""`flowpay kafka`: the brokers' side of Kafka security (ACLs per role)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from flowpay_cli.context import settings
from flowpay_cli.output import Json, console, print_json, print_table
from workers.core.kafka_acls import Plan, apply, plan

app = typer.Typer(help="Kafka security: least-privilege ACLs for each role's principal.")
acls_app = typer.Typer(help="The ACLs each role's principal gets.")
app.add_typer(acls_app, name="acls")


@acls_app.command("apply")
def acls_apply(
    ctx: typer.Context,
    print_only: Annotated[
        bool, typer.Option("--print", help="Only show the ACLs; change nothing.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Give each role's principal exactly the ACLs it needs (idempotent).

    Runs as the operator's principal, which needs the right to alter the cluster's ACLs.
    """
    config = settings(ctx)
    wanted = plan(config)
    created = 0 if print_only else apply(config, wanted.grants)
    if as_json:
        print_json({**_as_dict(wanted), "applied": not print_only, "created": created})
        return
    print_table(
        "Kafka ACLs" + ("" if print_only else " (applied)"),
        ["role", "principal", "resource", "pattern", "name", "operation"],
        [(g.role, g.principal, g.resource, g.pattern, g.name, g.operation) for g in wanted.grants],
    )
    _notes(wanted)


def _as_dict(wanted: Plan) -> dict[str, object]:
    return {
        "acls": [asdict(g) for g in wanted.grants],
        "roles_without_principal": wanted.unnamed,
        "shared_principals": wanted.shared,
    }


def _notes(wanted: Plan) -> None:
    if wanted.unnamed:
        console.print(
            f"[yellow]no principal configured for {', '.join(wanted.unnamed)}: "
            "no ACLs for them (set kafka.principals.<role> or kafka.sasl_username)[/]"
        )
    for principal, roles in wanted.shared.items():
        console.print(
            f"[yellow]{principal} is shared by {', '.join(roles)}: it gets all their rights; "
            "give each role its own principal for least privilege[/]"
        )
