"""Merchants' webhook endpoints. The notifier owns them; each has its own signing secret."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from psycopg import Connection

from workers.core.errors import FlowPayError
from workers.core.ids import new_id
from workers.core.sql import load_queries

Q = load_queries("workers.notifier")


class InvalidEndpoint(FlowPayError):
    pass


@dataclass(frozen=True)
class NewEndpoint:
    id: str
    merchant_id: str
    url: str
    secret: str  # shown once


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise InvalidEndpoint(f"webhook URL must be an http(s) URL with a host: {url!r}")
    return url


def register_endpoint(conn: Connection[Any], merchant_id: str, url: str) -> NewEndpoint:
    endpoint = NewEndpoint(new_id("we"), merchant_id, check_url(url), new_secret())
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
