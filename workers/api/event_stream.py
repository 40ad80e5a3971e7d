"""``GET /v1/events/stream``: every event of the merchant's payments as it happens (SSE).

Each frame is one event as ``GET /v1/events/<id>`` shows it, its id (``evt_...``) the frame's
id. A new stream starts with what happens from then on; ``Last-Event-ID: evt_...`` resumes after
that event: every later one still kept, in order, then live. It never ends by itself. ``type``
filters as ``GET /v1/events``'s does.

Events come in the order the read model committed them (``api.events``' ``tx``, ``seq``), and
only those of transactions older than every one still running: one that commits late cannot
fall behind a stream's cursor. An event waiting on an older transaction is looked for again
soon, sooner than the heartbeat. The key's cap on open streams, its rate limit (at the
request), the end of a stream when its key is revoked and the keep-alives are the payment
stream's (``workers.api.stream``), whose loop it runs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from workers.api import event_openapi, openapi
from workers.api.change_feed import MERCHANT_EVENTS, ChangeFeed
from workers.api.errors import ApiError, codes
from workers.api.event_routes import TAG, TypeFilter
from workers.api.events import ID_PATTERN, event_id, event_object, like_pattern
from workers.api.payments import dumps
from workers.api.services import services_of
from workers.api.stream import Found, counted, follow, key_watch
from workers.core.config import Settings
from workers.core.sql import load_queries

Q = load_queries("workers.api")
PAGE: Final = 100  # events read at a time
# How soon to look again for an event waiting on an older transaction, doubling to the most.
HELD_FIRST_S: Final = 0.02
HELD_MOST_S: Final = 1.0
LAST_EVENT_ID_HEADER: Final = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "The id of the last event seen: the stream resumes after it. "
    "Browsers' EventSource sends it by itself when it reconnects.",
    "schema": {"type": "string", "pattern": ID_PATTERN,
               "examples": [event_openapi.EVENT_ID_EXAMPLE]},
}  # fmt: skip
_STREAM: Final = {
    "description": "Each event of your payments as it happens, as Server-Sent Events",
    "headers": {"X-Request-Id": openapi.REQUEST_ID},
    "content": {"text/event-stream": {"schema": event_openapi.event_stream("StreamedEvent")}},
}  # fmt: skip


@dataclass
class Cursor:
    """Where a stream is, in commit order: the last event's transaction and place in it."""

    tx: str
    seq: int


def router(settings: Settings, feed: ChangeFeed) -> APIRouter:
    heartbeat_s = settings.api.stream_heartbeat_s
    routes = APIRouter()

    @routes.get(
        "/v1/events/stream",
        response_class=StreamingResponse,
        **openapi.operation(
            "streamEvents", "Follow every event of your payments as Server-Sent Events", tag=TAG,
            parameters=[LAST_EVENT_ID_HEADER],
            errors=codes(
                "last_event_id_invalid", "last_event_id_unknown", "parameter_invalid",
                "too_many_streams",
            ),
            answers={"200": _STREAM},
        ),
    )  # fmt: skip
    async def stream_events(request: Request, type_: TypeFilter = None) -> Response:
        services = services_of(request)
        caller = await services.auth.admit(request.headers.get("authorization"))
        merchant_id = caller.merchant_id
        cursor = await _start(services.pool, merchant_id, request.headers.get("last-event-id"))
        look = _looker(services.pool, cursor, like_pattern(type_))
        frames = _frames(feed, merchant_id, key_watch(services, request), look, heartbeat_s)
        return counted(services, caller.key, frames, {})

    return routes


async def _frames(
    feed: ChangeFeed,
    merchant_id: str,
    current_merchant: Callable[[], Awaitable[str | None]],
    look: Callable[[str], Awaitable[Found]],
    heartbeat_s: float,
) -> AsyncIterator[bytes]:
    # Subscribed before the first read, so an event recorded in between still wakes us.
    with feed.subscribe(merchant_id, MERCHANT_EVENTS) as changed:
        what = f"event stream of merchant {merchant_id}"
        async for frame in follow(changed, current_merchant, look, heartbeat_s, what):
            yield frame


async def _start(pool: AsyncConnectionPool[Any], merchant_id: str, header: str | None) -> Cursor:
    """After the event ``header`` names; without one, from now on."""
    async with pool.connection() as conn:
        if header is None:
            row = await (await conn.execute(Q["event_stream_horizon"])).fetchone()
            assert row is not None
            return Cursor(str(row[0]), 0)
        if not re.fullmatch(ID_PATTERN, header):
            raise ApiError(
                400, "last_event_id_invalid", "Last-Event-ID must be an event id (evt_...)",
                param="Last-Event-ID",
            )  # fmt: skip
        params = {"id": uuid.UUID(hex=header.removeprefix("evt_")), "merchant_id": merchant_id}
        found = await (await conn.execute(Q["event_stream_cursor"], params)).fetchone()
    if found is None:
        raise ApiError(
            409, "last_event_id_unknown", "Last-Event-ID is none of your events still kept",
            param="Last-Event-ID",
        )  # fmt: skip
    return Cursor(str(found[0]), int(found[1]))


def _looker(
    pool: AsyncConnectionPool[Any], cursor: Cursor, type_like: str
) -> Callable[[str], Awaitable[Found]]:
    """What one look finds after ``cursor`` (which it moves past what it sends)."""
    held_s = HELD_FIRST_S

    async def look(merchant_id: str) -> Found:
        nonlocal held_s
        params = {"merchant_id": merchant_id, "tx": cursor.tx, "seq": cursor.seq,
                  "type": type_like, "limit": PAGE}  # fmt: skip
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as rows:
            found = await (await rows.execute(Q["event_stream_next"], params)).fetchall()
        frames: list[bytes] = []
        for row in found:
            if not row["settled"]:
                wait_s, held_s = held_s, min(held_s * 2, HELD_MOST_S)
                return Found(frames, again_in_s=wait_s)
            frames.append(b"id: %s\ndata: %s\n\n" % (
                event_id(row["id"]).encode(), dumps(event_object(row))
            ))  # fmt: skip
            cursor.tx, cursor.seq = row["tx"], int(row["seq"])
        held_s = HELD_FIRST_S
        return Found(frames, again_in_s=0.0 if len(found) == PAGE else None)

    return look
