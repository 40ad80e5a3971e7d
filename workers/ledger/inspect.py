"""Read-only views of the ledger: `flowpay status` and `flowpay ledger balances` show them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from workers.core.money import Money, UnknownCurrency
from workers.ledger.store import LIVE_SCHEMA, queries


def ledger_view(conn: psycopg.Connection[Any], payment_id: str) -> list[dict[str, Any]]:
    """Every posting of a payment, in chain order: one dict per entry, with its transaction's
    kind, the account, direction, phase, amount (minor units), currency and its source event
    (event id, topic, partition, offset). Empty when the ledger has not seen the payment."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(
            queries(LIVE_SCHEMA)["ledger_view"], {"payment_id": payment_id}
        ).fetchall()
    return [
        {**row, "transaction_id": str(row["transaction_id"]), "event_id": str(row["event_id"])}
        for row in rows
    ]


@dataclass(frozen=True)
class Balance:
    """An account's balances on its normal side (what it is worth), in minor units."""

    account: str
    code: str
    merchant_id: str | None
    currency: str
    normal_side: str
    pending: int
    posted: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "code": self.code,
            "merchant_id": self.merchant_id,
            "currency": self.currency,
            "normal_side": self.normal_side,
            "pending": self.pending,
            "posted": self.posted,
        }


def balances(
    conn: psycopg.Connection[Any],
    *,
    merchant_id: str | None = None,
    currency: str | None = None,
    schema: str = LIVE_SCHEMA,
) -> list[Balance]:
    rows = conn.execute(
        queries(schema)["balances"], {"merchant_id": merchant_id, "currency": currency}
    ).fetchall()
    found = []
    for account, code, merchant, cur, side, pending_net, posted_net in rows:
        sign = 1 if side == "debit" else -1  # debits - credits, turned to the normal side
        found.append(
            Balance(account, code, merchant, cur, side, sign * pending_net, sign * posted_net)
        )
    return found


def major_units(amount: int, currency: str) -> str:
    """``12.34 USD`` for 1234 minor units; the bare amount for a currency ISO 4217 lacks."""
    try:
        return str(Money(amount, currency))
    except UnknownCurrency:
        return f"{amount} {currency}"
