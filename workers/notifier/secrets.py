"""Where endpoints' signing secrets are kept: the one place that writes and reads them.

An endpoint has one or more secrets (``notifier.endpoint_secrets``): after a rotation the earlier
ones sign too until they expire, so every delivery meanwhile carries a signature by each
(Standard Webhooks allows several) and a merchant can switch its verifier over without a gap.
Every other module goes through ``store_secret``, ``expire_secrets`` and ``load_secrets``, so
how a secret is stored (encrypted at rest, issue 17) changes here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, Connection

from workers.core.sql import load_queries

Q = load_queries("workers.notifier")


def store_secret(conn: Connection[Any], endpoint_id: str, secret: str) -> None:
    """Keep a new secret of an endpoint (it signs from now on), in the caller's transaction."""
    conn.execute(Q["secret_insert"], {"endpoint_id": endpoint_id, "secret": secret})


def expire_secrets(conn: Connection[Any], endpoint_id: str, at: datetime | None) -> None:
    """The endpoint's secrets kept so far stop signing ``at`` (None: at once), unless they
    were to stop earlier."""
    conn.execute(Q["secrets_expire"], {"endpoint_id": endpoint_id, "at": at})


async def load_secrets(
    conn: AsyncConnection[Any], endpoint_ids: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """Each endpoint's secrets that sign now, newest first."""
    cursor = await conn.execute(Q["secrets_signing"], {"endpoint_ids": sorted(set(endpoint_ids))})
    signing: dict[str, list[str]] = {}
    for endpoint_id, secret in await cursor.fetchall():
        signing.setdefault(str(endpoint_id), []).append(str(secret))
    return {endpoint_id: tuple(secrets) for endpoint_id, secrets in signing.items()}
