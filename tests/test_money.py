from __future__ import annotations

import pytest

from workers.core.money import Money, UnknownCurrency, currency_exponent


@pytest.mark.parametrize(("code", "exponent"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3)])
def test_exponents_follow_iso_4217(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize("code", ["usd", "XXZ", "US", "USDD", "XXX", "XAU", ""])
def test_unknown_lower_case_and_non_money_codes_are_refused(code: str) -> None:
    with pytest.raises(UnknownCurrency):
        currency_exponent(code)


def test_money_prints_in_major_units_without_floats() -> None:
    assert str(Money(1999, "USD")) == "19.99 USD"
    assert str(Money(500, "JPY")) == "500 JPY"
    assert str(Money(-1005, "KWD")) == "-1.005 KWD"


@pytest.mark.parametrize("amount", [19.99, True, "1999"])
def test_money_refuses_anything_but_int(amount: object) -> None:
    with pytest.raises(TypeError):
        Money(amount, "USD")  # type: ignore[arg-type]
