"""`flowpay payout` and `flowpay balance`: a merchant's payouts and balance, as the API's own."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from flowpay_cli import params
from flowpay_cli.commands.payments import IdempotencyKey
from flowpay_cli.context import settings
from flowpay_cli.output import Json, print_json, print_table
from workers.api.operator import balance_as_operator, payout_as_operator
from workers.api.schemas import PayoutCreate

Merchant = Annotated[str, typer.Option("--merchant", help="The merchant's id (mer_...).")]


def payout(
    ctx: typer.Context,
    merchant: Merchant,
    amount: Annotated[int, typer.Option(min=1, help="Minor units.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code.", callback=params.currency)],
    destination: Annotated[
        str | None, typer.Option(help="The bank account paid into (default: the merchant's).")
    ] = None,
    idempotency_key: IdempotencyKey = None,
    as_json: Json = False,
) -> None:
    """Pay out (part of) a merchant's available balance, as POST /v1/payouts does."""
    try:
        body = PayoutCreate(amount=amount, currency=currency, destination=destination)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise typer.BadParameter(str(first["msg"]), param_hint=str(first["loc"][0])) from None
    result = payout_as_operator(settings(ctx), merchant, body, idempotency_key)
    if as_json:
        print_json(result)
        return
    print_table(f"payout {result['id']}", ["field", "value"], result.items())


def balance(ctx: typer.Context, merchant: Merchant, as_json: Json = False) -> None:
    """A merchant's balance per currency: available to pay out, and pending."""
    found = balance_as_operator(settings(ctx), merchant)
    if as_json:
        print_json(found)
        return
    pending = {f["currency"]: f["amount"] for f in found["pending"]}
    rows = [(f["currency"], f["amount"], pending.get(f["currency"], 0)) for f in found["available"]]
    print_table(f"balance of {merchant}", ["currency", "available", "pending"], rows)
