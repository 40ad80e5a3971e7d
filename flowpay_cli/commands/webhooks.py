"""`flowpay webhooks` and `flowpay run-notifier`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from flowpay_cli.context import settings
from flowpay_cli.output import Json, console, print_created, print_json, print_table
from flowpay_cli.role_options import LogFormatOption, role_settings
from workers.api.operator import add_endpoint_as_operator
from workers.core.db import connect
from workers.notifier import deliveries
from workers.notifier.endpoints import disable_endpoint, enable_endpoint
from workers.notifier.worker import serve

app = typer.Typer(help="Inspect and retry webhook deliveries; manage endpoints.")


def run_notifier(ctx: typer.Context, log_format: LogFormatOption = None) -> None:
    """Deliver signed webhooks to merchants."""
    serve(role_settings(ctx, log_format, "notifier"))


@app.command("endpoints")
def endpoints(
    ctx: typer.Context,
    merchant: Annotated[
        str | None, typer.Option("--merchant", help="Only this merchant's.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Every webhook endpoint (secrets are never shown again)."""
    with connect(settings(ctx), "operator") as conn:
        rows = deliveries.list_endpoints(conn, merchant)
    if as_json:
        print_json(rows)
        return
    columns = ["id", "merchant_id", "url", "status", "disabled_reason", "created_at"]
    print_table("webhook endpoints", columns, [[r[c] for c in columns] for r in rows])


@app.command("add-endpoint")
def add_endpoint(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option("--merchant", help="The merchant's id.")],
    url: Annotated[str, typer.Option("--url", help="Where to POST webhooks.")],
    as_json: Json = False,
) -> None:
    """Add an endpoint (https, outside private networks) as the merchant would through the API;
    prints its signing secret once."""
    endpoint = add_endpoint_as_operator(settings(ctx), merchant, url)
    shown = {
        "id": endpoint["id"],
        "merchant_id": merchant,
        "url": endpoint["url"],
        "secret": endpoint["secret"],
    }
    print_created(
        "webhook endpoint added",
        shown,
        as_json=as_json,
        note="The signing secret is shown only this once.",
    )


@app.command("disable")
def disable(
    ctx: typer.Context, endpoint_id: Annotated[str, typer.Argument(help="Its id.")]
) -> None:
    """Stop sending to an endpoint; its deliveries are kept (failed, endpoint_disabled)."""
    with connect(settings(ctx), "operator") as conn:
        kept = disable_endpoint(conn, endpoint_id)
    if kept is None:
        console.print(f"{endpoint_id} was disabled already")
        return
    console.print(f"disabled {endpoint_id}; {kept} pending deliveries kept, not sent")


@app.command("enable")
def enable(ctx: typer.Context, endpoint_id: Annotated[str, typer.Argument(help="Its id.")]) -> None:
    """Send to an endpoint again (also one the notifier disabled)."""
    with connect(settings(ctx), "operator") as conn:
        enabled = enable_endpoint(conn, endpoint_id)
    console.print(f"enabled {endpoint_id}")
    if enabled.kept and enabled.kept_since is not None:
        since = enabled.kept_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        console.print(
            f"{enabled.kept} deliveries were kept while it was disabled; send them with"
            f" `flowpay webhooks retry --failed --endpoint {endpoint_id} --since {since}`"
        )


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="pending, delivered or failed.")] = None,
    merchant: Annotated[
        str | None, typer.Option("--merchant", help="Only this merchant's.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Json = False,
) -> None:
    """Deliveries, newest first."""
    if status not in (None, "pending", "delivered", "failed"):
        raise typer.BadParameter("must be pending, delivered or failed", param_hint="--status")
    with connect(settings(ctx), "operator") as conn:
        rows = deliveries.list_deliveries(conn, status=status, merchant_id=merchant, limit=limit)
    if as_json:
        print_json(rows)
        return
    columns = [
        "id",
        "payment_id",
        "event_type",
        "status",
        "attempts",
        "last_status",
        "last_error",
        "created_at",
    ]
    print_table("webhook deliveries", columns, [[r[c] for c in columns] for r in rows])


@app.command("attempts")
def attempts(ctx: typer.Context, delivery_id: str, as_json: Json = False) -> None:
    """Every attempt at one delivery."""
    with connect(settings(ctx), "operator") as conn:
        rows = deliveries.attempts_of(conn, delivery_id)
    if as_json:
        print_json(rows)
        return
    columns = ["attempt", "started_at", "duration_ms", "status_code", "error", "response_head"]
    print_table(f"attempts of {delivery_id}", columns, [[r[c] for c in columns] for r in rows])


@app.command("retry")
def retry(
    ctx: typer.Context,
    delivery_id: Annotated[str | None, typer.Argument(help="One failed delivery.")] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Every failed delivery (with --since).")
    ] = False,
    since: Annotated[
        datetime | None, typer.Option(help="With --failed: created at or after (UTC).")
    ] = None,
    merchant: Annotated[
        str | None, typer.Option("--merchant", help="With --failed: only this merchant's.")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="With --failed: only this endpoint's.")
    ] = None,
) -> None:
    """Send failed deliveries again, with the same webhook-id (to enabled endpoints)."""
    if (delivery_id is None) == (not failed):
        raise typer.BadParameter("give a delivery id, or --failed --since TIME")
    with connect(settings(ctx), "operator") as conn:
        if delivery_id is not None:
            deliveries.requeue(conn, delivery_id)
            console.print(f"re-queued {delivery_id}")
            return
        if since is None:
            raise typer.BadParameter("--failed needs --since", param_hint="--since")
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)
        count = deliveries.requeue_failed(conn, moment, merchant, endpoint)
        console.print(f"re-queued {count} failed deliveries")
