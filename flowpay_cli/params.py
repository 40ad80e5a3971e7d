"""Checks of option values shared by commands: a bad value is a usage error (one line, exit 2)."""

from __future__ import annotations

from typing import Annotated

import typer

from workers.core.money import UnknownCurrency, currency_exponent
from workers.core.requests import BadRequest, check_idempotency_key

# How a command that calls the API as a merchant is told which merchant, and where the API is.
ApiKey = Annotated[
    str | None,
    typer.Option(envvar="FLOWPAY_API_KEY", help="Merchant API key (default: the demo's)."),
]
ApiUrl = Annotated[str | None, typer.Option(help="API base URL (default: the configured API).")]


def currency(value: str | None) -> str | None:
    """An ISO 4217 code with minor units, upper-cased (``usd`` is ``USD``)."""
    if value is None:
        return None
    code = value.upper()
    try:
        currency_exponent(code)
    except UnknownCurrency as exc:
        raise typer.BadParameter(str(exc)) from None
    return code


def idempotency_key(value: str | None) -> str | None:
    """A key the API would accept in its Idempotency-Key header."""
    if value is None:
        return None
    try:
        return check_idempotency_key(value)
    except BadRequest as exc:
        raise typer.BadParameter(exc.message) from None
