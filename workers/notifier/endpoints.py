"""Merchants' webhook endpoints as the notifier sends to them; each has its signing secrets.

Merchants manage theirs through the API, and operators with ``flowpay webhooks add-endpoint``
(the API's code): their changes arrive as endpoint events (``workers.core.endpoint_events``,
applied by ``apply``). The dev stack's demo endpoint is registered here directly
(``register_endpoint``). An endpoint is sent the events its
``enabled_events`` name (``endpoint_events.wants``). It is disabled when it answers ``410
Gone``, when every attempt to it has failed for ``notifier.disable_after_s``, by an operator or
by its merchant; while it is, its deliveries are kept (``failed``, ``endpoint_disabled``) rather
than sent, for ``flowpay webhooks retry`` once it is enabled. A deleted endpoint is disabled for
good and keeps nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import Connection

from workers.core.config import NotifierSettings
from workers.core.endpoint_events import (
    EVERY_EVENT,
    EndpointEvent,
    EndpointEventType,
    new_webhook_secret,
)
from workers.core.errors import NotFoundError
from workers.core.ids import new_id
from workers.core.sealing import Keyring, Sealed
from workers.core.sql import load_queries
from workers.core.webhook_urls import check_webhook_url
from workers.notifier.endpoint_secrets import expire_secrets, seal_secret, store_secret

Q = load_queries("workers.notifier")
log = logging.getLogger(__name__)
ENDPOINT_DISABLED: Final = "endpoint_disabled"  # the last_error of a delivery kept, not sent


@dataclass(frozen=True)
class Endpoint:
    id: str
    merchant_id: str
    url: str


@dataclass(frozen=True)
class NewEndpoint(Endpoint):
    secret: str = field(repr=False)  # shown once


@dataclass(frozen=True)
class Enabled:
    endpoint_id: str
    kept: int  # deliveries that failed while it was disabled
    kept_since: datetime | None  # the oldest of them was created then


def register_endpoint(
    conn: Connection[Any],
    merchant_id: str,
    url: str,
    settings: NotifierSettings,
    keys: Keyring,
    enabled_events: Sequence[str] = (EVERY_EVENT,),
) -> NewEndpoint:
    """Add an endpoint whose URL obeys ``workers.core.webhook_urls`` under ``settings``; its new
    secret is stored sealed with ``keys``' current key."""
    checked = check_webhook_url(url, settings)
    endpoint = NewEndpoint(new_id("we"), merchant_id, checked, new_webhook_secret())
    with conn.transaction():
        _insert(
            conn, endpoint, enabled_events, None, seal_secret(keys, endpoint.id, endpoint.secret)
        )
    return endpoint


def _insert(
    conn: Connection[Any],
    endpoint: Endpoint,
    events: Sequence[str],
    at: datetime | None,
    sealed: Sealed,
) -> None:
    params = {"id": endpoint.id, "merchant_id": endpoint.merchant_id, "url": endpoint.url,
              "enabled_events": list(events), "at": at or datetime.now(UTC)}  # fmt: skip
    if conn.execute(Q["endpoint_insert"], params).fetchone() is not None:
        store_secret(conn, endpoint.id, sealed)


def apply(conn: Connection[Any], event: EndpointEvent) -> None:
    """One change a merchant made through the API, in the caller's transaction (once: the
    caller dedupes by event id). Its URL was checked by the API under the same rules."""
    at = event.occurred_at
    if event.type is EndpointEventType.CREATED:
        assert event.url is not None
        assert event.sealed_secret is not None
        assert event.enabled_events
        created = Endpoint(event.endpoint_id, event.merchant_id, event.url)
        _insert(conn, created, event.enabled_events, at, event.sealed_secret)
    elif event.type is EndpointEventType.UPDATED:
        params = {"id": event.endpoint_id, "url": event.url,
                  "enabled_events": list(event.enabled_events or ()), "at": at}  # fmt: skip
        if conn.execute(Q["endpoint_update"], params).fetchone() is None:
            log.warning("endpoint %s: an update of no live endpoint", event.endpoint_id)
        elif event.disabled is True:
            conn.execute(Q["endpoint_disable"], {"id": event.endpoint_id, "reason": "merchant"})
        elif event.disabled is False:
            conn.execute(Q["endpoint_enable"], {"id": event.endpoint_id})
    elif event.type is EndpointEventType.SECRET_ROTATED:
        assert event.sealed_secret is not None
        expire_secrets(conn, event.endpoint_id, event.previous_expire_at)
        store_secret(conn, event.endpoint_id, event.sealed_secret)
    else:
        conn.execute(Q["endpoint_delete"], {"id": event.endpoint_id, "at": at})


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
