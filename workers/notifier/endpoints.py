"""Merchants' webhook endpoints. The notifier owns them; each has its own signing secret."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

from psycopg import Connection

from workers.core.config import NotifierSettings
from workers.core.ids import new_id
from workers.core.sql import load_queries
from workers.core.webhook_urls import check_webhook_url

Q = load_queries("workers.notifier")


@dataclass(frozen=True)
class NewEndpoint:
    id: str
    merchant_id: str
    url: str
    secret: str  # shown once


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def register_endpoint(
    conn: Connection[Any], merchant_id: str, url: str, settings: NotifierSettings
) -> NewEndpoint:
    """Add an endpoint whose URL obeys ``workers.core.webhook_urls`` under ``settings``."""
    checked = check_webhook_url(url, settings)
    endpoint = NewEndpoint(new_id("we"), merchant_id, checked, new_secret())
    with conn.transaction():
        conn.execute(
            Q["endpoint_insert"],
            {
                "id": endpoint.id,
                "merchant_id": merchant_id,
                "url": endpoint.url,
                "secret": endpoint.secret,
            },
        )
    return endpoint
