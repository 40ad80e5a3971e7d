"""Merchants, their API keys and the origins they allow, for the operator's CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection

from workers.api.auth import key_hash, new_api_key
from workers.api.origins import check_origins
from workers.core.errors import NotFoundError
from workers.core.ids import new_id
from workers.core.sql import load_queries

Q = load_queries("workers.api")


@dataclass(frozen=True)
class NewMerchant:
    id: str
    name: str
    api_key: str  # shown once, never stored
    api_key_id: str


@dataclass(frozen=True)
class NewKey:
    id: str
    merchant_id: str
    api_key: str  # shown once, never stored


@dataclass(frozen=True)
class KeyRow:
    id: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class MerchantRow:
    id: str
    name: str
    created_at: datetime
    active_keys: int


def create_merchant(conn: Connection[Any], name: str) -> NewMerchant:
    merchant_id = new_id("mer")
    with conn.transaction():
        conn.execute(Q["merchant_insert"], {"id": merchant_id, "name": name})
        key = _insert_key(conn, merchant_id)
    return NewMerchant(merchant_id, name, key.api_key, key.id)


def create_key(conn: Connection[Any], merchant_id: str) -> NewKey:
    """Another API key for a merchant (to rotate: create, switch clients over, revoke the old)."""
    if not merchant_exists(conn, merchant_id):
        raise NotFoundError(f"no merchant {merchant_id}")
    with conn.transaction():
        return _insert_key(conn, merchant_id)


def _insert_key(conn: Connection[Any], merchant_id: str) -> NewKey:
    key = NewKey(new_id("key"), merchant_id, new_api_key())
    conn.execute(
        Q["api_key_insert"],
        {"id": key.id, "merchant_id": merchant_id, "key_hash": key_hash(key.api_key),
         "key_prefix": key.api_key[:12]},
    )  # fmt: skip
    return key


def revoke_key(conn: Connection[Any], key_id: str) -> KeyRow:
    """Revoke one API key for good; servers refuse it within ``api.key_cache_s``."""
    with conn.transaction():
        row = conn.execute(Q["api_key_revoke"], {"id": key_id}).fetchone()
    if row is None:
        raise NotFoundError(f"no active API key {key_id}")
    return KeyRow(*row)


def list_keys(conn: Connection[Any], merchant_id: str) -> list[KeyRow]:
    """A merchant's API keys, revoked ones included (only prefixes: keys are not stored)."""
    if not merchant_exists(conn, merchant_id):
        raise NotFoundError(f"no merchant {merchant_id}")
    return [KeyRow(*row) for row in conn.execute(Q["api_keys_list"], {"merchant_id": merchant_id})]


def list_merchants(conn: Connection[Any]) -> list[MerchantRow]:
    return [MerchantRow(*row) for row in conn.execute(Q["merchants_list"]).fetchall()]


def merchant_exists(conn: Connection[Any], merchant_id: str) -> bool:
    return conn.execute(Q["merchant_exists"], {"id": merchant_id}).fetchone() is not None


def set_origins(conn: Connection[Any], merchant_id: str, origins: list[str]) -> list[str]:
    """Make ``origins`` (checked, as browsers send them) all the merchant allows: the pages
    that may use its payments' client secrets. An empty list allows none."""
    checked = check_origins(origins)
    with conn.transaction():
        row = conn.execute(
            Q["merchant_origins_set"], {"id": merchant_id, "origins": checked}
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no merchant {merchant_id}")
    return list(row[0])


def allowed_origins(conn: Connection[Any], merchant_id: str) -> list[str]:
    row = conn.execute(Q["merchant_origins"], {"id": merchant_id}).fetchone()
    if row is None:
        raise NotFoundError(f"no merchant {merchant_id}")
    return list(row[0])
