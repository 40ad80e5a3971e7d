"""Merchants' webhook endpoints. The notifier owns them; each has its own signing secret.

An endpoint is disabled when it answers ``410 Gone``, when every attempt to it has failed for
``notifier.disable_after_s``, or by an operator; while it is, its deliveries are kept (``failed``,
``endpoint_disabled``) rather than sent, for ``flowpay webhooks retry`` once it is enabled.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import Connection

from workers.core.config import NotifierSettings
from workers.core.errors import NotFoundError
from workers.core.ids import new_id
from workers.core.sealing import Keyring
from workers.core.sql import load_queries
from workers.core.webhook_urls import check_webhook_url
from workers.notifier.endpoint_secrets import seal_secret

Q = load_queries("workers.notifier")
ENDPOINT_DISABLED: Final = "endpoint_disabled"  # the last_error of a delivery kept, not sent


@dataclass(frozen=True)
class NewEndpoint:
    id: str
    merchant_id: str
    url: str
    secret: str  # shown once


@dataclass(frozen=True)
class Enabled:
    endpoint_id: str
    kept: int  # deliveries that failed while it was disabled
    kept_since: datetime | None  # the oldest of them was created then


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def register_endpoint(
    conn: Connection[Any], merchant_id: str, url: str, settings: NotifierSettings, keys: Keyring
) -> NewEndpoint:
    """Add an endpoint whose URL obeys ``workers.core.webhook_urls`` under ``settings``; its new
    secret is stored sealed with ``keys``' current key."""
    checked = check_webhook_url(url, settings)
    endpoint = NewEndpoint(new_id("we"), merchant_id, checked, new_secret())
    sealed = seal_secret(keys, endpoint.id, endpoint.secret)
    with conn.transaction():
        conn.execute(
            Q["endpoint_insert"],
            {"id": endpoint.id, "merchant_id": merchant_id, "url": endpoint.url, **sealed},
        )
    return endpoint


def disable_endpoint(conn: Connection[Any], endpoint_id: str) -> int | None:
    """Disable an endpoint (an operator's decision): how many pending deliveries it kept, or
    None when it was disabled already."""
    with conn.transaction():
        params = {"id": endpoint_id, "reason": "operator"}
        row = conn.execute(Q["endpoint_disable"], params).fetchone()
        if row is None or row[0] == 0:
            _must_exist(conn, endpoint_id)
            return None
        return int(row[1])


def enable_endpoint(conn: Connection[Any], endpoint_id: str) -> Enabled:
    """Enable an endpoint again; says what it missed while disabled."""
    with conn.transaction():
        if conn.execute(Q["endpoint_enable"], {"id": endpoint_id}).fetchone() is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id}")
        row = conn.execute(
            Q["deliveries_failed_while_disabled"], {"endpoint_id": endpoint_id}
        ).fetchone()
    kept, since = (0, None) if row is None else (int(row[0]), row[1])
    return Enabled(endpoint_id, kept, since)


def _must_exist(conn: Connection[Any], endpoint_id: str) -> None:
    if conn.execute(Q["endpoint_status"], {"id": endpoint_id}).fetchone() is None:
        raise NotFoundError(f"no webhook endpoint {endpoint_id}")
