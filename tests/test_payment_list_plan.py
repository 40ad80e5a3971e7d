"""GET /v1/payments reads a page from an index in (merchant_id, id) order, never sorting a
merchant's whole history: its cost stays that of one page however many payments there are."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

from tests.helpers.db import Conn
from workers.api.merchants import create_merchant
from workers.core.sql import load_queries

Q = load_queries("workers.api")
HISTORY = 500  # the merchant's payments
EVERY = 200  # one payment in EVERY is the merchant's: a small one among many
NEIGHBOURS = 100


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _plan(db: Conn, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan of a named query as the API runs it, with what each step read: psycopg
    prepares a statement it runs often, and PostgreSQL may then plan it once for any
    parameters (a generic plan), so it is prepared here too and ``plan_cache_mode`` chooses
    which plan runs."""
    text = Q[query].as_string(db)
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", text)))
    for n, name in enumerate(names, 1):
        text = text.replace(f"%({name})s", f"${n}")
    db.execute(sql.SQL("DEALLOCATE ALL"))
    db.execute(sql.SQL("PREPARE listing AS {}").format(sql.SQL(text)))
    values = sql.SQL(", ").join(sql.Literal(params[name]) for name in names)
    explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE listing ({})").format(values)
    row = db.execute(explain).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return list(_nodes(document[0]["Plan"]))


@pytest.fixture
def history(db: Conn) -> str:
    """A merchant with a long history among many others': every 200th payment is its own
    (the others' spread over a hundred merchants). The merchant's id."""
    mine = create_merchant(db, "Long history")
    db.execute(
        "INSERT INTO api.merchants (id, name)"
        " SELECT 'mer_n' || g, 'Neighbour ' || g FROM generate_series(0, %s) g",
        (NEIGHBOURS - 1,),
    )
    db.execute(
        "INSERT INTO api.payments (id, merchant_id, amount, currency, payment_method, status)"
        " SELECT 'pay_' || lpad(k::text, 26, '0'),"
        "        CASE WHEN k %% %(every)s = 0 THEN %(mine)s ELSE 'mer_n' || k %% %(neighbours)s END,"
        "        1999, 'USD', 'pm_card_visa',"
        "        (ARRAY['succeeded', 'failed', 'processing'])[k / %(every)s %% 3 + 1]"
        " FROM generate_series(1, %(total)s) k",
        {"mine": mine.id, "every": EVERY, "neighbours": NEIGHBOURS, "total": HISTORY * EVERY},
    )
    db.execute("ANALYZE api.merchants, api.payments")
    return mine.id


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize(
    ("query", "page"),
    [
        ("payments_list", {}),
        ("payments_list_after", {"starting_after": "pay_" + "0" * 21 + "50000"}),
        ("payments_list", {"status": "failed"}),
    ],
    ids=["first", "after", "status"],
)
def test_a_page_is_read_in_index_order_without_sorting_the_history(
    db: Conn, history: str, query: str, page: dict[str, Any], plan_cache_mode: str
) -> None:
    db.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.Literal(plan_cache_mode)))
    params = {"merchant_id": history, "limit": 11, "starting_after": None, "status": None}
    nodes = _plan(db, query, params | page)
    assert not [n for n in nodes if "Sort" in n["Node Type"]], nodes
    scan = next(n for n in nodes if "Scan" in n["Node Type"])
    assert "merchant_id" in scan.get("Index Cond", ""), nodes  # only the merchant's payments
    if "status" not in page:
        # One page read, and nothing else: no payment past the cursor read and thrown away.
        assert scan["Actual Rows"] == 11, nodes
        assert scan.get("Rows Removed by Filter", 0) == 0, nodes
