"""Merchants' webhook endpoints, as the API and the operator's CLI manage them.

The API keeps what each merchant asked for (``api.webhook_endpoints``: URL, event types,
description, enabled or disabled, deleted) and stages every change as an endpoint event in its
outbox, in the same transaction; the notifier applies them to the endpoints it sends to
(``workers.core.endpoint_events``). The signing secret is made here, shown once in the answer
that made it, and sent to the notifier in its event, sealed (``workers.core.webhook_secrets``):
the API keeps no secret, and a retry with the same Idempotency-Key gets the answer without it
(rotate to get a new one).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from workers.api.endpoint_schemas import (
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from workers.api.errors import ApiError, not_found
from workers.api.idempotency import Answer, lock_id
from workers.api.payments import dumps
from workers.core.config import NotifierSettings
from workers.core.endpoint_events import (
    EVERY_EVENT,
    EndpointEvent,
    EndpointEventType,
    endpoint_outbox_row,
    new_endpoint_event,
    new_webhook_secret,
)
from workers.core.ids import new_id
from workers.core.outbox import insert_statement
from workers.core.sealing import Keyring
from workers.core.sql import load_queries
from workers.core.webhook_secrets import seal_webhook_secret
from workers.core.webhook_urls import InvalidWebhookUrl, check_webhook_url

Q = load_queries("workers.api")
SOURCE: Final = "flowpay/api"
# A URL's host is resolved to check where it leads; a resolver slower than this is not waited
# for (the notifier checks every address again on each attempt).
RESOLVE_TIMEOUT_S: Final = 5.0
Conn = AsyncConnection[Any]


def endpoint_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "webhook_endpoint",
        "url": row["url"],
        "enabled_events": list(row["enabled_events"]),
        "description": row["description"],
        "status": row["status"],
        "created": int(row["created_at"].timestamp()),
    }


def enabled(events: Sequence[str]) -> list[str]:
    """The event types as stored: each once, in the order given (``*`` alone stands for all)."""
    unique = list(dict.fromkeys(events))
    return [EVERY_EVENT] if EVERY_EVENT in unique else unique


async def checked_url(url: str, settings: NotifierSettings) -> str:
    """``url`` if webhooks may go there (the operator's rules, ``webhook_urls``), else 422."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(check_webhook_url, url, settings), RESOLVE_TIMEOUT_S
        )
    except TimeoutError:
        return url  # its name did not resolve in time: as for a name that does not resolve
    except InvalidWebhookUrl as exc:
        raise ApiError(422, "url_invalid", f"url: {exc}", param="url") from None


async def create(
    conn: Conn,
    keys: Keyring,
    merchant_id: str,
    body: WebhookEndpointCreate,
    url: str,
    correlation_id: str,
    *,
    most: int,
) -> Answer:
    """A new endpoint and its secret (``url`` already checked), in the caller's transaction;
    409 when the merchant already has ``most``."""
    await _room_for_one(conn, merchant_id, most)
    now = datetime.now(UTC)
    events = enabled(body.enabled_events)
    row: dict[str, Any] = {"id": new_id("we"), "merchant_id": merchant_id, "url": url,
           "description": body.description, "enabled_events": events,
           "status": "enabled", "created_at": now, "at": now}  # fmt: skip
    secret = new_webhook_secret()
    await conn.execute(Q["endpoint_insert"], row)
    await _stage(
        conn, EndpointEventType.CREATED, row, correlation_id,
        url=url, enabled_events=tuple(events), **_sealed(keys, row["id"], secret),
    )  # fmt: skip
    shown = endpoint_object(row)
    return Answer(
        201,
        dumps({**shown, "secret": secret}),
        f"/v1/webhook_endpoints/{row['id']}",
        stored=dumps(shown),
    )


async def _room_for_one(conn: Conn, merchant_id: str, most: int) -> None:
    await conn.execute(Q["endpoints_lock"], {"lock": lock_id("webhook_endpoints", merchant_id)})
    held = await (await conn.execute(Q["endpoints_held"], {"merchant_id": merchant_id})).fetchone()
    if held is not None and held[0] >= most:
        raise ApiError(
            409,
            "webhook_endpoints_at_limit",
            f"a merchant may have {most} webhook endpoints at most: delete one to add another",
        )


async def update(
    conn: Conn,
    merchant_id: str,
    endpoint_id: str,
    body: WebhookEndpointUpdate,
    url: str | None,
    correlation_id: str,
) -> Answer:
    """Change what the body names (``url`` already checked); the rest stays."""
    row = await _live(conn, merchant_id, endpoint_id)
    before = dict(row)
    if url is not None:
        row["url"] = url
    if body.enabled_events is not None:
        row["enabled_events"] = enabled(body.enabled_events)
    if "description" in body.model_fields_set:
        row["description"] = body.description
    if body.disabled is not None:
        row["status"] = "disabled" if body.disabled else "enabled"
    if row != before:
        await conn.execute(
            Q["endpoint_update"], {**row, "merchant_id": merchant_id, "at": datetime.now(UTC)}
        )
    sent = ("url", "enabled_events")
    if any(row[k] != before[k] for k in sent) or body.disabled is not None:
        await _stage(
            conn, EndpointEventType.UPDATED, {**row, "merchant_id": merchant_id}, correlation_id,
            url=row["url"], enabled_events=tuple(row["enabled_events"]), disabled=body.disabled,
        )  # fmt: skip
    return Answer(200, dumps(endpoint_object(row)))


async def rotate_secret(
    conn: Conn,
    keys: Keyring,
    merchant_id: str,
    endpoint_id: str,
    expires_in_s: int,
    correlation_id: str,
) -> Answer:
    """A new secret; the current ones still sign for ``expires_in_s`` seconds."""
    row = await _live(conn, merchant_id, endpoint_id)
    secret = new_webhook_secret()
    expire = datetime.now(UTC) + timedelta(seconds=expires_in_s) if expires_in_s else None
    await _stage(
        conn, EndpointEventType.SECRET_ROTATED, {**row, "merchant_id": merchant_id},
        correlation_id, previous_expire_at=expire, **_sealed(keys, endpoint_id, secret),
    )  # fmt: skip
    shown = endpoint_object(row)
    return Answer(200, dumps({**shown, "secret": secret}), stored=dumps(shown))


def _sealed(keys: Keyring, endpoint_id: str, secret: str) -> dict[str, Any]:
    """The event's fields carrying ``secret``, sealed: it never travels in plain text."""
    sealed = seal_webhook_secret(keys, endpoint_id, secret)
    # Base64Bytes takes its input base64-encoded, in Python as in JSON.
    return {"secret_key_id": sealed.key_id, "secret_sealed": base64.b64encode(sealed.blob)}


async def delete(conn: Conn, merchant_id: str, endpoint_id: str, correlation_id: str) -> bytes:
    """Delete an endpoint for good (its id is never shown again); 404 if there is none."""
    params = {"id": endpoint_id, "merchant_id": merchant_id, "at": datetime.now(UTC)}
    cursor = await conn.execute(Q["endpoint_delete"], params)
    if await cursor.fetchone() is None:
        raise not_found("webhook endpoint")
    await _stage(conn, EndpointEventType.DELETED, params | {"merchant_id": merchant_id},
                 correlation_id)  # fmt: skip
    return dumps({"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})


async def get(conn: Conn, merchant_id: str, endpoint_id: str) -> dict[str, Any]:
    return endpoint_object(await _live(conn, merchant_id, endpoint_id))


async def page(
    conn: Conn, merchant_id: str, limit: int, starting_after: str | None
) -> dict[str, Any]:
    """A page of the merchant's endpoints, newest first."""
    if starting_after is not None:
        await _live(conn, merchant_id, starting_after, param="starting_after")
    params = {"merchant_id": merchant_id, "limit": limit + 1, "starting_after": starting_after}
    async with conn.cursor(row_factory=dict_row) as cursor:
        rows = await (await cursor.execute(Q["endpoints_page"], params)).fetchall()
    data = [endpoint_object(r) for r in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit}


async def _live(
    conn: Conn, merchant_id: str, endpoint_id: str, param: str = "id"
) -> dict[str, Any]:
    if "\x00" in endpoint_id:  # no id holds it, and PostgreSQL cannot compare it
        raise not_found("webhook endpoint", param=param)
    async with conn.cursor(row_factory=dict_row) as cursor:
        params = {"id": endpoint_id, "merchant_id": merchant_id}
        found = await (await cursor.execute(Q["endpoint_get"], params)).fetchone()
    if found is None:
        raise not_found("webhook endpoint", param=param)
    return dict(found)


async def _stage(
    conn: Conn,
    type_: EndpointEventType,
    row: dict[str, Any],
    correlation_id: str,
    **fields: Any,
) -> EndpointEvent:
    event = new_endpoint_event(
        type_, endpoint_id=row["id"], merchant_id=row["merchant_id"], source=SOURCE,
        correlation_id=correlation_id, **fields,
    )  # fmt: skip
    async with conn.cursor() as cursor:
        await cursor.execute(insert_statement("api"), endpoint_outbox_row(event))
    return event


def secret_of(answer: Answer) -> str:
    """The secret an answer shows (the CLI prints it once)."""
    return str(json.loads(answer.body)["secret"])
