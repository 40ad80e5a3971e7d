"""`flowpay serve-api` and `flowpay merchants`."""

from __future__ import annotations

from typing import Annotated

import typer

from flowpay_cli.context import settings, state
from flowpay_cli.output import Json, console, print_created, print_json, print_table
from flowpay_cli.role_options import LogFormatOption, role_settings
from workers.api import merchants as merchant_store
from workers.api.operator import add_endpoint_as_operator
from workers.api.server import serve
from workers.core.db import connect
from workers.core.logs import setup_logging
from workers.core.sealing import keyring
from workers.core.webhook_urls import check_webhook_url

merchants_app = typer.Typer(
    help="Create and list merchants; issue and revoke their API keys; allow their origins."
)


def serve_api(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: api.host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: api.port).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Server processes (default: api.workers).")
    ] = None,
    log_format: LogFormatOption = None,
) -> None:
    """Serve the merchant HTTP API (and its status read model)."""
    config = role_settings(ctx, log_format, "api" if settings(ctx).api.read_model else None)
    setup_logging(config.log_level, "api", config.log_format)
    serve(
        config,
        host=host or config.api.host,
        port=port or config.api.port,
        workers=workers or config.api.workers,
        config_file=state(ctx).resolved_config_file,
    )


@merchants_app.command("create")
def merchants_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="The merchant's name.")],
    webhook_url: Annotated[
        str | None, typer.Option("--webhook-url", help="Where to send webhooks.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Create a merchant; prints its API key once (and its webhook secret once)."""
    config = settings(ctx)
    if not 1 <= len(name) <= 200:
        raise typer.BadParameter("must be 1 to 200 characters", param_hint="--name")
    if webhook_url is not None:  # before anything is created
        check_webhook_url(webhook_url, config.notifier)
        keyring(config)
    with connect(config, "operator") as conn:
        merchant = merchant_store.create_merchant(conn, name)
    created = {
        "id": merchant.id,
        "name": merchant.name,
        "api_key_id": merchant.api_key_id,
        "api_key": merchant.api_key,
    }
    if webhook_url is not None:
        created |= _register_webhook(ctx, merchant.id, webhook_url)
    print_created(
        "merchant created",
        created,
        as_json=as_json,
        note="The API key (and webhook secret) are shown only this once.",
    )


def _register_webhook(ctx: typer.Context, merchant_id: str, url: str) -> dict[str, str]:
    """Its endpoint, as the merchant would add it through the API (the lists agree)."""
    endpoint = add_endpoint_as_operator(settings(ctx), merchant_id, url)
    return {
        "webhook_endpoint_id": endpoint["id"],
        "webhook_url": endpoint["url"],
        "webhook_secret": endpoint["secret"],
    }


@merchants_app.command("list")
def merchants_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Every merchant, with its number of active API keys."""
    with connect(settings(ctx), "operator") as conn:
        rows = merchant_store.list_merchants(conn)
    if as_json:
        print_json([vars(r) for r in rows])
        return
    print_table(
        "merchants",
        ["id", "name", "created", "active keys"],
        [(r.id, r.name, r.created_at, r.active_keys) for r in rows],
    )


@merchants_app.command("create-key")
def merchants_create_key(
    ctx: typer.Context,
    merchant_id: Annotated[str, typer.Argument(help="The merchant (mer_...).")],
    as_json: Json = False,
) -> None:
    """Issue another API key for a merchant; prints it once."""
    with connect(settings(ctx), "operator") as conn:
        key = merchant_store.create_key(conn, merchant_id)
    created = {"api_key_id": key.id, "merchant_id": key.merchant_id, "api_key": key.api_key}
    print_created(
        "API key created", created, as_json=as_json, note="The API key is shown only this once."
    )


@merchants_app.command("revoke-key")
def merchants_revoke_key(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id (key_..., see `merchants keys`).")],
    as_json: Json = False,
) -> None:
    """Revoke an API key: servers refuse it (401) within api.key_cache_s seconds."""
    config = settings(ctx)
    with connect(config, "operator") as conn:
        row = merchant_store.revoke_key(conn, key_id)
    if as_json:
        print_json(vars(row))
        return
    console.print(
        f"revoked {row.id} ({row.key_prefix}...); refused within {config.api.key_cache_s:g} s"
    )


@merchants_app.command("keys")
def merchants_keys(
    ctx: typer.Context,
    merchant_id: Annotated[str, typer.Argument(help="The merchant (mer_...).")],
    as_json: Json = False,
) -> None:
    """A merchant's API keys by id and prefix, revoked ones included."""
    with connect(settings(ctx), "operator") as conn:
        rows = merchant_store.list_keys(conn, merchant_id)
    if as_json:
        print_json([vars(r) for r in rows])
        return
    print_table(
        "API keys",
        ["id", "prefix", "created", "revoked"],
        [(r.id, r.key_prefix, r.created_at, r.revoked_at) for r in rows],
    )


MerchantId = Annotated[str, typer.Argument(help="The merchant (mer_...).")]


@merchants_app.command("set-origins")
def merchants_set_origins(
    ctx: typer.Context,
    merchant_id: MerchantId,
    origins: Annotated[
        list[str],
        typer.Argument(help="scheme://host[:port] of each page allowed (replaces the list)."),
    ],
    as_json: Json = False,
) -> None:
    """Allow these origins' pages to use the merchant's client secrets (CORS); others refused."""
    _origins(ctx, merchant_id, as_json, origins)


@merchants_app.command("origins")
def merchants_origins(ctx: typer.Context, merchant_id: MerchantId, as_json: Json = False) -> None:
    """The origins whose pages may use the merchant's client secrets."""
    _origins(ctx, merchant_id, as_json)


@merchants_app.command("clear-origins")
def merchants_clear_origins(
    ctx: typer.Context, merchant_id: MerchantId, as_json: Json = False
) -> None:
    """Allow no origin: pages elsewhere can no longer use the merchant's client secrets."""
    _origins(ctx, merchant_id, as_json, [])


def _origins(
    ctx: typer.Context, merchant_id: str, as_json: bool, new: list[str] | None = None
) -> None:
    """Show the merchant's allowed origins, after making them ``new`` if given."""
    with connect(settings(ctx), "operator") as conn:
        if new is None:
            allowed = merchant_store.allowed_origins(conn, merchant_id)
        else:
            allowed = merchant_store.set_origins(conn, merchant_id, new)
    if as_json:
        print_json({"merchant_id": merchant_id, "allowed_origins": allowed})
        return
    rows = [(merchant_id, origin) for origin in allowed]
    print_table("allowed origins", ["merchant", "origin"], rows)
