"""Money: integer minor units and an ISO 4217 currency. Never a float."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

import iso4217
from pydantic import AfterValidator

MAX_AMOUNT: Final = 10**12


class UnknownCurrency(ValueError):
    """Not an active ISO 4217 currency with minor units."""


def currency_exponent(code: str) -> int:
    """Minor-unit exponent of an ISO 4217 code: USD -> 2, JPY -> 0, KWD -> 3."""
    if len(code) != 3 or not code.isascii() or not code.isupper():
        raise UnknownCurrency(f"{code!r} is not an upper-case ISO 4217 code")
    try:
        exponent = iso4217.Currency(code).exponent
    except ValueError:
        raise UnknownCurrency(f"{code!r} is not an ISO 4217 currency") from None
    if exponent is None:  # funds, metals, XXX: not money a card can be charged in
        raise UnknownCurrency(f"{code!r} has no minor unit")
    return int(exponent)


def currency_codes() -> list[str]:
    """Every code ``currency_exponent`` accepts, sorted (for the API's document)."""
    return sorted(c.code for c in iso4217.Currency if c.exponent is not None)


def _checked_currency(code: str) -> str:
    try:
        currency_exponent(code)
    except UnknownCurrency as exc:
        raise ValueError(str(exc)) from None  # pydantic reports a ValueError as a field error
    return code


# An upper-case ISO 4217 code with minor units, for request models.
CurrencyCode = Annotated[str, AfterValidator(_checked_currency)]


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise TypeError("amount must be an int of minor units")
        currency_exponent(self.currency)

    def __str__(self) -> str:
        exponent = currency_exponent(self.currency)
        sign = "-" if self.amount < 0 else ""
        whole, minor = divmod(abs(self.amount), 10**exponent)
        text = f"{whole}.{minor:0{exponent}d}" if exponent else str(whole)
        return f"{sign}{text} {self.currency}"
