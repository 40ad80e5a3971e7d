"""`flowpay dlq`: see and replay the messages a worker could not handle."""

from __future__ import annotations

from typing import Annotated

import typer

from flowpay_cli.context import settings
from flowpay_cli.output import Json, console, print_json, print_table
from workers.core import dlq
from workers.core.db import connect

app = typer.Typer(help="Inspect and replay dead letters.")
Group = Annotated[str | None, typer.Option("--group", help="Only this consumer group's.")]


@app.command("list")
def list_(ctx: typer.Context, group: Group = None, as_json: Json = False) -> None:
    """Every dead letter: when, which group, where from, why."""
    rows = [d.summary() for d in dlq.read_all(settings(ctx), group)]
    if as_json:
        print_json(rows)
        return
    columns = ["id", "failed_at", "group", "source", "error_type", "error"]
    print_table("dead letters", columns, [[r[c] for c in columns] for r in rows])


@app.command("show")
def show(ctx: typer.Context, dead_letter_id: str, as_json: Json = False) -> None:
    """One dead letter whole: headers and its value, decoded where possible."""
    letter = dlq.find(settings(ctx), dead_letter_id)
    whole = {
        **letter.summary(),
        "key": (letter.key or b"").decode("utf-8", "replace"),
        "headers": {k: letter.header(k) for k, _ in letter.headers},
        "value": letter.decoded(),
    }
    if as_json:
        print_json(whole)
        return
    print_table(f"dead letter {dead_letter_id}", ["field", "value"], whole.items())


@app.command("replay")
def replay(
    ctx: typer.Context,
    dead_letter_id: Annotated[
        str | None, typer.Argument(help="One dead letter (<partition>:<offset>).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter (of --group).")] = False,
    group: Group = None,
    force: Annotated[bool, typer.Option("--force", help="Replay even if replayed before.")] = False,
) -> None:
    """Re-publish dead letters to their source topic for their group to retry."""
    if (dead_letter_id is None) == (not all_):
        raise typer.BadParameter("give a dead letter id, or --all")
    config = settings(ctx)
    letters = dlq.read_all(config, group) if all_ else [dlq.find(config, dead_letter_id or "")]
    replayed = skipped = 0
    with connect(config, "operator", autocommit=True) as conn:
        for letter in letters:
            try:
                dlq.replay(config, conn, letter, force=force)
                replayed += 1
            except dlq.AlreadyReplayed:
                if not all_:
                    raise
                skipped += 1
    console.print(
        f"replayed {replayed}" + (f", skipped {skipped} replayed before" if skipped else "")
    )
