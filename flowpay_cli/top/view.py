"""How `flowpay top` draws a ``Snapshot``: compact enough for an 80x24 terminal."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from flowpay_cli.top.gather import Snapshot

MISSING = "-"


def render(snapshot: Snapshot, refresh_s: float = 1.0) -> RenderableType:
    return Group(
        _header(snapshot, refresh_s),
        _side_by_side(_throughput(snapshot), _lag(snapshot)),
        _backlogs(snapshot),
    )


def _header(snapshot: Snapshot, refresh_s: float) -> Text:
    line = Text.assemble(
        ("FlowPay top", "bold"),
        f"  {snapshot.at:%H:%M:%S} UTC  every {refresh_s:g}s  q quits\n",
    )
    for role, up in [*snapshot.roles.items(), ("db", snapshot.database)]:
        line.append(f"{role} ", style="" if up else "dim")
        line.append("up  " if up else "DOWN  ", style="green" if up else "bold red")
    return line


def _side_by_side(left: Table, right: Table) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=11)
    grid.add_column(ratio=9)
    grid.add_row(left, right)
    return grid


def _table(title: str, *columns: str, header: bool = True) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        show_header=header,
        expand=True,
        pad_edge=False,
        padding=(0, 1),
    )
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
    return table


def _throughput(snapshot: Snapshot) -> Table:
    table = _table("Throughput", "stage", "/s", "total")
    for row in snapshot.throughput:
        table.add_row(row.stage, _number(row.per_s, ".1f"), _number(row.total, ".0f"))
    return table


def _lag(snapshot: Snapshot) -> Table:
    table = _table("Consumer lag", "group", "lag", "parts")
    for lag in snapshot.lag:
        style = "yellow" if lag.messages else ""
        table.add_row(lag.group, Text(_number(lag.messages), style=style), str(lag.partitions))
    return table


def _backlogs(snapshot: Snapshot) -> Table:
    table = _table("Backlogs", "", "", "", "", header=False)
    cells: list[tuple[str, str | Text]] = [
        *((f"outbox {b.outbox}", f"{b.rows} ({b.oldest_age_s:.1f}s)") for b in snapshot.outbox),
        ("gateway in flight", _number(snapshot.gateway_in_flight)),
        *((_watched_label(w.state), f"{w.payments} ({w.due} due)") for w in snapshot.reconciler),
        ("webhooks pending", _number(snapshot.webhooks.get("pending"))),
        ("webhooks failed", _number(snapshot.webhooks.get("failed"))),
        ("webhook retries", _number(snapshot.webhook_failed_attempts)),
        ("dead letters", _dead_letters(snapshot)),
    ]
    for left, right in zip(cells[0::2], cells[1::2], strict=False):
        table.add_row(*left, *right)
    if len(cells) % 2:
        table.add_row(*cells[-1], "", "")
    return table


def _watched_label(state: str) -> str:
    return "unknown outcome" if state == "processing" else f"watched ({state})"


def _dead_letters(snapshot: Snapshot) -> Text:
    total = sum(snapshot.dead_letters.values())
    text = Text(str(total), style="bold red" if total else "")
    worst = [f"{g} {n}" for g, n in snapshot.dead_letters.items() if n]
    if worst:
        text.append(" (" + ", ".join(worst) + ")")
    return text


def _number(value: float | int | None, spec: str = "d") -> str:
    if value is None:
        return MISSING
    return format(int(value) if spec == "d" else value, spec)
