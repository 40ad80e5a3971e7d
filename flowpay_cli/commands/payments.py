"""`flowpay refund` and `flowpay status`: one payment, as every service sees it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from flowpay_cli import params
from flowpay_cli.context import settings
from flowpay_cli.output import Json, console, print_json, print_table
from workers.api.operator import payment_view, refund_status, request_refund_as_operator
from workers.core.config import Settings
from workers.core.db import connect
from workers.core.errors import FlowPayError
from workers.core.outbox import EMITTING_SCHEMAS, events_of
from workers.ledger.inspect import ledger_view
from workers.notifier.deliveries import attempts_of, list_deliveries
from workers.processor.inspect import processor_view


def refund(
    ctx: typer.Context,
    payment_id: Annotated[str, typer.Argument(help="The payment to refund.")],
    amount: Annotated[
        int | None, typer.Option(min=1, help="Minor units (default: all that is left).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Makes a retried command safe.", callback=params.idempotency_key),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the processor's answer.")] = False,
    wait_timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 60.0,
    as_json: Json = False,
) -> None:
    """Request a refund of a payment (as the merchant's API would)."""
    config = settings(ctx)
    result = request_refund_as_operator(config, payment_id, amount, reason, idempotency_key)
    if wait:
        result = _wait_refund(config, result["id"], wait_timeout)
    if as_json:
        print_json(result)
        return
    print_table(f"refund {result['id']}", ["field", "value"], result.items())


def _wait_refund(config: Settings, refund_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with connect(config, "operator", autocommit=True) as conn:
        while True:
            found = refund_status(conn, refund_id)
            if found["status"] != "requested":
                return found
            if time.monotonic() > deadline:
                raise FlowPayError(f"refund {refund_id} still requested after {timeout_s:.0f}s")
            time.sleep(0.2)


def status(
    ctx: typer.Context,
    payment_id: Annotated[str, typer.Argument(help="The payment to show.")],
    as_json: Json = False,
) -> None:
    """Show one payment's whole history: its events, the processor's state and gateway attempts."""
    with connect(settings(ctx), "operator", autocommit=True) as conn:
        events: list[dict[str, Any]] = [
            {
                "type": e.type.value,
                "event_id": str(e.event_id),
                "occurred_at": e.occurred_at,
                "source": e.source,
                "published": published,
                "data": e.data.model_dump(),
            }
            for schema in EMITTING_SCHEMAS
            for e, published in events_of(conn, schema, payment_id)
        ]
        events.sort(key=lambda e: e["occurred_at"])
        view = {
            "payment": payment_view(conn, payment_id),
            "events": events,
            "processor": processor_view(conn, payment_id),
            "postings": ledger_view(conn, payment_id),
            "deliveries": [
                {**d, "attempts_log": attempts_of(conn, d["id"])}
                for d in list_deliveries(conn, payment_id=payment_id)
            ],
        }
    if as_json:
        print_json(view)
        return
    console.print(_render(view))


def _render(view: dict[str, Any]) -> Group:
    payment = view["payment"]
    summary = Table.grid(padding=(0, 2))
    for key in (
        "id",
        "merchant_id",
        "status",
        "amount",
        "currency",
        "refunded_amount",
        "failure_reason",
    ):
        summary.add_row(key, str(payment[key]))
    events = Table(
        "when", "event", "source", "published", "data", title="events", title_justify="left"
    )
    for e in view["events"]:
        events.add_row(
            str(e["occurred_at"]),
            e["type"],
            e["source"],
            "yes" if e["published"] else "no",
            ", ".join(f"{k}={v}" for k, v in e["data"].items()),
        )
    parts: list[Any] = [Panel(summary, title="payment"), events]
    processor = view["processor"]
    if processor is not None:
        attempts = Table(
            "when",
            "call",
            "outcome",
            "detail",
            "ms",
            title="gateway attempts",
            title_justify="left",
        )
        for a in processor["attempts"]:
            attempts.add_row(
                str(a["created_at"]),
                a["kind"],
                a["outcome"],
                a["detail"] or "",
                str(a["duration_ms"]),
            )
        parts += [
            f"processor state: {processor['state']}  charge: {processor['charge_id']}",
            attempts,
        ]
    if view["postings"]:
        parts.append(_postings_table(view["postings"]))
    if view["deliveries"]:
        hooks = Table(
            "webhook", "event", "status", "attempts", "last", title="webhooks", title_justify="left"
        )
        for d in view["deliveries"]:
            last = d["attempts_log"][-1] if d["attempts_log"] else {}
            outcome = last.get("status_code") or last.get("error") or ""
            hooks.add_row(d["id"], d["event_type"], d["status"], str(d["attempts"]), str(outcome))
        parts.append(hooks)
    return Group(*parts)


def _postings_table(postings: list[dict[str, Any]]) -> Table:
    columns = ["kind", "account", "direction", "phase", "amount", "currency", "partition", "offset"]
    table = Table(*columns, title="ledger postings", title_justify="left")
    for posting in postings:
        table.add_row(*(str(posting[c]) for c in columns))
    return table
