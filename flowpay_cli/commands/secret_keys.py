"""`flowpay secrets`: the key webhook signing secrets are sealed with, and its rotation.

Rotation reads every sealed secret and writes it again, which only the notifier's role may:
these commands connect as it (``database.urls.notifier``) and need the keys it has.
"""

from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowpay_cli.context import settings
from flowpay_cli.output import Json, console, print_json, print_table
from workers.core.db import connect
from workers.core.sealing import generate_key, keyring
from workers.notifier.endpoint_secrets import key_use, rotate, stale_count

app = typer.Typer(help="The key that webhook signing secrets are encrypted with, and rotating it.")


@app.command("generate-key")
def generate(as_json: Json = False) -> None:
    """Print a new random key for [secrets] key / FLOWPAY_SECRETS__KEY (kept nowhere)."""
    key = generate_key()
    if as_json:
        print_json({"key": key})
        return
    typer.echo(key)


@app.command("status")
def status(ctx: typer.Context, as_json: Json = False) -> None:
    """How many secrets each key sealed, and whether the configuration holds that key."""
    config = settings(ctx)
    keys = keyring(config)
    with connect(config, "notifier") as conn:
        uses = key_use(conn, keys)
    rows = [{"key_id": u.key_id, "state": u.state, "secrets": u.secrets} for u in uses]
    if as_json:
        print_json({"current_key_id": keys.current_id, "keys": rows})
        return
    table = [(u.key_id or "", u.state, u.secrets) for u in uses]
    print_table("webhook secrets by key", ["key id", "state", "secrets"], table)
    console.print(f"current key: {keys.current_id}")


@app.command("rotate")
def rotate_(ctx: typer.Context, as_json: Json = False) -> None:
    """Seal every secret that is not under secrets.key (or is plain text) with it.

    Bring the new key in first, on every role: secrets.key the new one, the old one in
    secrets.previous_keys. Once this is done, the old key can go. Safe to run again, and while
    the notifiers run.
    """
    config = settings(ctx)
    keys = keyring(config)
    with connect(config, "notifier") as conn:
        total = stale_count(conn, keys)
        with _progress(as_json) as progress:
            task = progress.add_task("sealing", total=total)
            done = rotate(conn, keys, lambda n: progress.advance(task, n))
    if as_json:
        print_json({"resealed": done, "key_id": keys.current_id})
        return
    console.print(f"{done} secrets sealed with key {keys.current_id}")


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )
