"""Merchants and their API keys, for the operator's CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection

from workers.api.auth import key_hash, new_api_key
from workers.core.ids import new_id
from workers.core.sql import load_queries

Q = load_queries("workers.api")


@dataclass(frozen=True)
class NewMerchant:
    id: str
    name: str
    api_key: str  # shown once, never stored


@dataclass(frozen=True)
class MerchantRow:
    id: str
    name: str
    created_at: datetime
    active_keys: int


def create_merchant(conn: Connection[Any], name: str) -> NewMerchant:
    merchant_id = new_id("mer")
    api_key = new_api_key()
    with conn.transaction():
        conn.execute(Q["merchant_insert"], {"id": merchant_id, "name": name})
        conn.execute(
            Q["api_key_insert"],
            {"id": new_id("key"), "merchant_id": merchant_id, "key_hash": key_hash(api_key),
             "key_prefix": api_key[:12]},
        )  # fmt: skip
    return NewMerchant(merchant_id, name, api_key)


def list_merchants(conn: Connection[Any]) -> list[MerchantRow]:
    return [MerchantRow(*row) for row in conn.execute(Q["merchants_list"]).fetchall()]


def merchant_exists(conn: Connection[Any], merchant_id: str) -> bool:
    return conn.execute(Q["merchant_exists"], {"id": merchant_id}).fetchone() is not None
