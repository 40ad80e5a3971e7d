"""How the CLI prints: rich tables for people, ``--json`` for scripts, one line for errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

# The one --json option: every command that has it prints JSON for scripts with print_json.
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def print_created(title: str, fields: dict[str, Any], *, as_json: bool, note: str) -> None:
    """What a command created, holding a secret shown this once: JSON, or a table and ``note``."""
    if as_json:
        print_json(fields)
        return
    print_table(title, ["field", "value"], fields.items())
    console.print(f"[yellow]{note}[/]")


def error_line(message: str) -> None:
    first, _, rest = message.partition("\n")
    err_console.print(f"[bold red]error:[/] {first}", markup=True, highlight=False, soft_wrap=True)
    if rest:
        err_console.print(rest, style="dim", markup=False, highlight=False, soft_wrap=True)
