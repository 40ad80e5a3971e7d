"""`flowpay ledger check|balances`, `flowpay run-ledger` and `flowpay replay`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from flowpay_cli import params
from flowpay_cli.context import settings
from flowpay_cli.output import Json, console, print_json, print_table
from flowpay_cli.role_options import LogFormatOption, role_settings
from workers.core.db import connect
from workers.ledger import metrics as ledger_metrics
from workers.ledger.check import CheckResult, run_checks
from workers.ledger.consumer import serve
from workers.ledger.inspect import balances as ledger_balances
from workers.ledger.inspect import major_units
from workers.ledger.replay import BalanceChange, Replay

EXIT_VIOLATIONS = 1
# Beyond this many, unapplied messages are counted, not listed (they are in dead_letters).
NOT_APPLIED_SHOWN = 20


ledger_app = typer.Typer(help="Check the ledger and show balances.", no_args_is_help=True)


@ledger_app.command("check")
def check(ctx: typer.Context, as_json: Json = False) -> None:
    """Verify every ledger invariant; exit 1 listing each violation if any does not hold."""
    with connect(settings(ctx), "operator", autocommit=True) as conn:
        results = run_checks(conn)
    ok = all(r.ok for r in results)
    if as_json:
        print_json({"ok": ok, "checks": [r.as_dict() for r in results]})
    else:
        _print_checks("ledger check", results)
    if not ok:
        raise typer.Exit(EXIT_VIOLATIONS)


@ledger_app.command("balances")
def balances(
    ctx: typer.Context,
    merchant: Annotated[str | None, typer.Option("--merchant", help="Only this merchant.")] = None,
    currency: Annotated[
        str | None,
        typer.Option("--currency", help="Only this currency.", callback=params.currency),
    ] = None,
    as_json: Json = False,
) -> None:
    """Pending and posted balance of each account (minor units, on its normal side)."""
    with connect(settings(ctx), "operator", autocommit=True) as conn:
        found = ledger_balances(
            conn, merchant_id=merchant, currency=currency.upper() if currency else None
        )
    if as_json:
        print_json([b.as_dict() for b in found])
        return
    print_table(
        "ledger balances",
        ["account", "merchant", "currency", "pending", "posted", "posted (major)"],
        [
            (b.code, b.merchant_id or "(house)", b.currency, b.pending, b.posted,
             major_units(b.posted, b.currency))
            for b in found
        ],
    )  # fmt: skip


def run_ledger(ctx: typer.Context, log_format: LogFormatOption = None) -> None:
    """Post payment events to the double-entry ledger."""
    serve(role_settings(ctx, log_format, "ledger"))


def replay(
    ctx: typer.Context,
    from_offset: Annotated[
        int,
        typer.Option(
            "--from-offset", min=0, help="Rebuild what offsets >= N posted (0: everything)."
        ),
    ],
    partition: Annotated[
        int | None, typer.Option("--partition", min=0, help="Only this partition.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; swap nothing in.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Swap without asking.")] = False,
) -> None:
    """Rebuild the ledger by replaying the event log (into a shadow, then swapped in)."""
    ledger_metrics.start_replay(settings(ctx))
    with Replay(settings(ctx), from_offset=from_offset, partition=partition) as job:
        console.print("copying the live ledger into a shadow schema ...")
        job.prepare()
        with _progress() as bar:
            task = bar.add_task("replaying", total=job.total)
            job.rebuild(lambda n: bar.advance(task, n))
            bar.update(task, completed=job.total)
        results = job.verify()
        if not all(r.ok for r in results):
            _print_checks("ledger check of the rebuilt ledger", results)
            console.print("the rebuilt ledger fails its checks: nothing swapped in")
            raise typer.Exit(EXIT_VIOLATIONS)
        _print_changes(job.changes())
        _print_not_applied(job.not_applied())
        if dry_run:
            console.print("dry run: the live ledger is unchanged")
            return
        if not yes and not typer.confirm("Swap the rebuilt ledger in?"):
            console.print("not swapped: the live ledger is unchanged")
            return
        generation = job.swap()
        console.print(f"the rebuilt ledger is live (generation {generation})")


def _print_not_applied(skipped: list[tuple[int, int, str, str]]) -> None:
    if not skipped:
        return
    print_table(
        f"{len(skipped)} replayed messages the ledger could not apply",
        ["partition", "offset", "error"],
        [(p, o, f"{t}: {e}") for p, o, t, e in skipped[:NOT_APPLIED_SHOWN]],
    )
    if len(skipped) > NOT_APPLIED_SHOWN:
        console.print(f"... and {len(skipped) - NOT_APPLIED_SHOWN} more")


def _print_checks(title: str, results: list[CheckResult]) -> None:
    print_table(
        title,
        ["check", "result", "violations", "what it verifies"],
        [(r.name, "ok" if r.ok else "FAIL", len(r.violations), r.description) for r in results],
    )
    for result in results:
        for violation in result.violations:
            console.print(f"[red]{result.name}[/]: {violation}", highlight=False)


def _print_changes(changes: list[BalanceChange]) -> None:
    if not changes:
        console.print("the rebuild changes no balance")
        return
    print_table(
        "balance changes (rebuilt - live, minor units)",
        ["account", "phase", "live", "rebuilt", "difference"],
        [(c.account, c.phase, c.before, c.after, f"{c.difference:+d}") for c in changes],
    )


class _EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


class _Remaining(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.remaining or 0:,.0f} left")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _EventsPerSecond(),
        _Remaining(),
        TimeElapsedColumn(),
        console=console,
    )
