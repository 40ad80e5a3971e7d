"""`flowpay run-orchestrator`, `flowpay sagas list` and `flowpay sagas show`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table

from flowpay_cli.context import settings
from flowpay_cli.output import Json, console, print_json, print_table
from flowpay_cli.role_options import LogFormatOption, role_settings
from workers.core.db import connect
from workers.orchestrator.inspect import list_sagas, saga_view
from workers.orchestrator.sagas import SagaState, SagaType
from workers.orchestrator.service import serve

app = typer.Typer(help="The sagas the orchestrator runs.", no_args_is_help=True)


def run_orchestrator(ctx: typer.Context, log_format: LogFormatOption = None) -> None:
    """Drive the payment and refund sagas: issue commands, wait for answers, fire timers."""
    serve(role_settings(ctx, log_format, "orchestrator"))


@app.command("list")
def list_command(
    ctx: typer.Context,
    state: Annotated[SagaState | None, typer.Option(help="Only sagas in this state.")] = None,
    type_: Annotated[SagaType | None, typer.Option("--type", help="Only this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 100,
    as_json: Json = False,
) -> None:
    """The newest sagas first."""
    with connect(settings(ctx), "operator", autocommit=True) as conn:
        found = list_sagas(
            conn,
            state=None if state is None else state.value,
            type_=None if type_ is None else type_.value,
            limit=limit,
        )
    if as_json:
        print_json(found)
        return
    columns = ["id", "type", "state", "step", "outcome", "updated_at"]
    print_table("sagas", columns, ([str(s[c] or "") for c in columns] for s in found))


@app.command("show")
def show(
    ctx: typer.Context,
    saga_id: Annotated[str, typer.Argument(help="The saga (e.g. payment:pay_..., refund:re_...).")],
    as_json: Json = False,
) -> None:
    """One saga: each step's command, when it was sent, the event that answered, its timers."""
    with connect(settings(ctx), "operator", autocommit=True) as conn:
        view = saga_view(conn, saga_id)
    if as_json:
        print_json(view)
        return
    console.print(render(view))


def render(view: dict[str, Any]) -> Group:
    """A saga as tables: where it stands, its steps (compensations marked), its timers."""
    head = f"saga {view['id']} ({view['definition']}): {view['state']} at {view['step']}"
    if view["outcome"]:
        head += f", outcome {view['outcome']}"
    steps = Table("#", "step", "command", "attempts", "sent", "answer", "answered",
                  title="steps", title_justify="left")  # fmt: skip
    for s in view["steps"]:
        name = f"undo {s['name']}" if s["compensation"] else s["name"]
        steps.add_row(str(s["seq"]), name, s["command_type"] or "(waits)", str(s["attempts"]),
                      str(s["sent_at"] or ""), s["answer_type"] or "",
                      str(s["answered_at"] or ""))  # fmt: skip
    timers = Table("step", "action", "due", "status", title="timers", title_justify="left")
    for t in view["timers"]:
        timers.add_row(str(t["step_seq"]), t["action"], str(t["due_at"]), t["status"])
    return Group(head, steps, timers)
