"""``GET /v1/payments/<id>/events``: a payment's status changes as Server-Sent Events.

Each event is the payment object after one change (the JSON of ``GET /v1/payments/<id>``) with
the change's version (1, 2, ... per payment) as its id. The stream starts with the current state
(with ``Last-Event-ID: N``, with every change after version N) and ends after a final status;
``204`` says there is nothing more to wait for, which stops a browser's ``EventSource`` from
reconnecting; an N the payment has not reached is a conflict (409), not a malformed id (400).
The key is checked again at each wake-up, so a stream ends within ``api.key_cache_s`` plus one
heartbeat of its key being revoked.
A key may hold at most ``api.max_streams_per_key`` streams open at once (``stream_quota.py``).
A browser follows it with the payment's client secret instead of a key (``client_secrets.py``):
the payment in its reduced view, with CORS headers for an allowed origin; the secret counts as
a key of its own for the quota.

Starlette's ``StreamingResponse`` rather than an SSE library: the route answers 404, 409, 400 or 204
as ordinary responses before streaming, and Starlette already cancels the stream when the client
goes away.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.types import Receive, Scope, Send

from workers.api import browser_routes, openapi
from workers.api.change_feed import ChangeFeed
from workers.api.client_secrets import browser_view
from workers.api.errors import ApiError, codes, not_found, too_many_streams
from workers.api.payments import check_lookable, dumps, merchant_view, payment_object
from workers.api.services import Services, services_of
from workers.core.config import Settings
from workers.core.db import database_url
from workers.core.sql import load_queries
from workers.core.status import TERMINAL, PaymentStatus

log = logging.getLogger(__name__)
Q = load_queries("workers.api")
KEEP_ALIVE: Final = b": keep-alive\n\n"
STREAM_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# What Last-Event-ID may be: a version of the stream's payment (0: none seen yet).
LAST_EVENT_ID: Final = "^[0-9]{1,9}$"
# Read from the request, like every header the API takes; declared here for the document.
LAST_EVENT_ID_HEADER: Final = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "The id of the last event seen: the stream resumes after it (0: from the "
    "first change). Browsers' EventSource sends it by itself when it reconnects.",
    "schema": {"type": "string", "pattern": LAST_EVENT_ID, "examples": ["2"]},
}
_STREAM: Final = {
    "description": "The payment after each change, as Server-Sent Events, until a final status",
    "headers": {"X-Request-Id": openapi.REQUEST_ID},
    # OpenAPI 3.1 has no itemSchema: see workers.api.openapi for how the events are described.
    "content": {"text/event-stream": {"schema": openapi.EVENT_STREAM}},
}
_NOTHING_MORE: Final = {
    "description": "Last-Event-ID is the payment's final change: nothing more will come",
    "headers": {"X-Request-Id": openapi.REQUEST_ID},
}


def change_feed(settings: Settings) -> ChangeFeed:
    """The process's one change feed: ``router`` runs it for the app's lifetime."""
    return ChangeFeed(database_url(settings, "api"), wake_window_s=settings.api.stream_heartbeat_s)


def router(settings: Settings, feed: ChangeFeed) -> APIRouter:
    """The payment's events route; runs ``feed``, which every stream route shares."""
    heartbeat_s = settings.api.stream_heartbeat_s

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        feed.start()
        try:
            yield
        finally:
            await feed.stop()

    routes = APIRouter(lifespan=lifespan)

    @routes.get(
        "/v1/payments/{payment_id}/events",
        response_class=StreamingResponse,
        **openapi.operation(
            "streamPaymentEvents", "Follow a payment's status as Server-Sent Events",
            tag="payments", browser=True,
            parameters=[LAST_EVENT_ID_HEADER],
            errors=codes(
                "last_event_id_invalid", "last_event_id_unknown", "resource_missing",
                "too_many_streams",
            ),
            answers={"200": _STREAM, "204": _NOTHING_MORE},
        ),
    )  # fmt: skip
    async def payment_events(
        request: Request,
        payment_id: openapi.PaymentId,
        client_secret: browser_routes.ClientSecret = None,
    ) -> Response:
        services = services_of(request)
        if client_secret is None:
            caller = await _merchant(services, request)
        else:
            caller = await _browser(request, payment_id, client_secret)
        merchant_id = caller.merchant_id
        given = seen_version(request.headers.get("last-event-id"))
        version, status = await _head(services.pool, merchant_id, payment_id)
        # A new stream starts with the current state; a resumed one after what it saw.
        seen = version - 1 if given is None else given
        if seen > version:
            # Well formed, but not an event of this payment (yet): no schema can say so.
            raise ApiError(
                409, "last_event_id_unknown", f"Last-Event-ID: payment has no event {seen}",
                param="Last-Event-ID",
            )  # fmt: skip
        if seen == version and status in TERMINAL:
            return Response(status_code=204, headers=caller.headers)
        frames = _frames(services.pool, feed, caller, payment_id, seen, heartbeat_s)
        return counted(services, caller.key, frames, caller.headers)

    return routes


@dataclass(frozen=True)
class StreamCaller:
    """Who follows the stream: a merchant by its key, or a browser by the payment's secret."""

    merchant_id: str
    key: int  # its number in the shared tables (stream quota)
    current_merchant: Callable[[], Awaitable[str | None]]  # None once it may no longer read
    view: Callable[[dict[str, Any]], dict[str, Any]]  # what it sees of each change
    headers: dict[str, str]  # its answers' own (CORS)


async def _merchant(services: Services, request: Request) -> StreamCaller:
    caller = await services.auth.admit(request.headers.get("authorization"))
    watch = key_watch(services, request)
    return StreamCaller(caller.merchant_id, caller.key, watch, merchant_view, {})


async def _browser(request: Request, payment_id: str, secret: str) -> StreamCaller:
    browser = await browser_routes.admit(request, payment_id, secret)

    async def current_merchant() -> str | None:
        return browser.merchant_id  # a client secret is good for its payment's life

    def view(row: dict[str, Any]) -> dict[str, Any]:
        return browser_view(payment_object(row))

    return StreamCaller(
        browser.merchant_id, browser.key, current_merchant, view, browser.cors_headers()
    )


def key_watch(services: Services, request: Request) -> Callable[[], Awaitable[str | None]]:
    """The merchant, while the request's key still works (cached per ``key_cache_s``); None
    once it was revoked: a stream asks at each wake-up."""
    authorization = request.headers.get("authorization")

    async def current_merchant() -> str | None:
        try:
            return await services.auth.merchant_for(authorization)
        except ApiError:
            return None  # revoked since the stream began

    return current_merchant


def counted(
    services: Services, key: int, frames: AsyncIterator[bytes], headers: dict[str, str]
) -> CountedStream:
    """``frames`` as the answer, counted in the key's quota of open streams (429 when full)."""
    if not services.streams.open(key):
        raise too_many_streams(services.streams.per_key)
    return CountedStream(frames, lambda: services.streams.close(key), headers)


class CountedStream(StreamingResponse):
    """An event stream that stays counted in its key's quota until it ends, however it ends
    (finished, client gone, server stopping): the response is always called once returned."""

    def __init__(
        self, frames: AsyncIterator[bytes], closed: Callable[[], None], headers: dict[str, str]
    ) -> None:
        super().__init__(
            frames, media_type="text/event-stream", headers={**STREAM_HEADERS, **headers}
        )
        self._closed = closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._closed()


def seen_version(header: str | None) -> int | None:
    """The last version the client saw (0: none, so every change since creation)."""
    if header is None:
        return None
    if not re.fullmatch(LAST_EVENT_ID, header):
        raise ApiError(
            400, "last_event_id_invalid", "Last-Event-ID must be an event id of this stream",
            param="Last-Event-ID",
        )  # fmt: skip
    return int(header)


async def _head(
    pool: AsyncConnectionPool[Any], merchant_id: str, payment_id: str
) -> tuple[int, str]:
    check_lookable(payment_id)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            Q["stream_head"], {"id": payment_id, "merchant_id": merchant_id}
        )
        row = await cursor.fetchone()
    if row is None:
        raise not_found("payment")
    return int(row[0]), str(row[1])


@dataclass(frozen=True)
class Found:
    """What one look at the database found: frames to send, and what follows."""

    frames: list[bytes]
    done: bool = False  # nothing more will come: the stream ends
    again_in_s: float | None = None  # look again this soon, woken or not


async def follow(
    changed: asyncio.Event,
    current_merchant: Callable[[], Awaitable[str | None]],
    look: Callable[[str], Awaitable[Found]],
    heartbeat_s: float,
    what: str,
) -> AsyncIterator[bytes]:
    """A stream's frames: ``look`` (for the key's merchant) at each wake-up of ``changed``,
    at each heartbeat and when ``look`` asks, until it is done or the key is revoked."""
    quiet_since = time.monotonic()
    while True:
        changed.clear()
        try:
            merchant_id = await current_merchant()
            if merchant_id is None:
                log.info("%s ends: its API key was revoked", what)
                return
            found = await look(merchant_id)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # Ending the stream is safe: the client resumes from its Last-Event-ID.
            log.warning("%s ends, database unavailable: %s", what, exc)
            return
        for frame in found.frames:
            yield frame
            quiet_since = time.monotonic()
        if found.done:
            return
        try:
            wait_s = heartbeat_s if found.again_in_s is None else found.again_in_s
            await asyncio.wait_for(changed.wait(), wait_s)
        except TimeoutError:
            if found.again_in_s is None or time.monotonic() - quiet_since >= heartbeat_s:
                # Idle: keep proxies from cutting the stream, and look again in case the
                # feed's connection died silently and took a notification with it.
                yield KEEP_ALIVE
                quiet_since = time.monotonic()


async def _frames(
    pool: AsyncConnectionPool[Any],
    feed: ChangeFeed,
    caller: StreamCaller,
    payment_id: str,
    seen: int,
    heartbeat_s: float,
) -> AsyncIterator[bytes]:
    """Every change after ``seen`` as it happens, until a final status."""

    async def look(merchant_id: str) -> Found:
        nonlocal seen
        changes = await _changes(pool, merchant_id, payment_id, seen, caller.view)
        if not changes:
            return Found([])
        seen = changes[-1][0]
        frames = [b"id: %d\ndata: %s\n\n" % (version, dumps(p)) for version, p in changes]
        return Found(frames, done=changes[-1][1]["status"] in TERMINAL)

    # Subscribed before the first read, so a change committed in between still wakes us.
    with feed.subscribe(payment_id) as changed:
        async for frame in follow(
            changed, caller.current_merchant, look, heartbeat_s, f"event stream of {payment_id}"
        ):
            yield frame


async def _changes(
    pool: AsyncConnectionPool[Any],
    merchant_id: str,
    payment_id: str,
    seen: int,
    view: Callable[[dict[str, Any]], dict[str, Any]],
) -> list[tuple[int, dict[str, Any]]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            Q["stream_changes"],
            {
                "id": payment_id,
                "merchant_id": merchant_id,
                "after": seen,
                "created": PaymentStatus.INITIATED,
            },
        )
        rows = await cursor.fetchall()
    return [(int(row["version"]), view(row)) for row in rows]
