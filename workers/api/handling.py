"""What every route does with its request and its answer: the caller, the body, the reply.

Shared by the routes of ``workers.api.app`` and those declared in modules of their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from fastapi import Request, Response
from psycopg import AsyncConnection

from workers.api.errors import ApiError
from workers.api.idempotency import Answer, request_hash, run_once
from workers.api.payments import dumps
from workers.api.request_context import correlation_id as current_correlation_id
from workers.api.schemas import parse_body
from workers.api.services import services_of
from workers.core.requests import StrictBody, check_idempotency_key

JSON: Final = "application/json"
B = TypeVar("B", bound=StrictBody)
# What an idempotent POST does in its transaction: (connection, merchant, body, correlation id).
Act = Callable[[AsyncConnection[Any], str, B, str], Awaitable[Answer]]


async def merchant(request: Request) -> str:
    """Who sent the request (401 without a valid key; 429 over the key's rate limit)."""
    caller = await services_of(request).auth.admit(request.headers.get("authorization"))
    return caller.merchant_id


def correlation_id(_request: Request) -> str:
    return current_correlation_id()


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and content_type != JSON:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json")
    return body


def path(request: Request) -> str:
    """``request.url.path``, without building the whole URL (host header parsing and all)."""
    found: str = request.scope["path"]
    return found.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"Request bodies are limited to {limit} bytes")


def answer(stored: Answer, correlation_id: str) -> Response:
    headers = {"X-Request-Id": correlation_id}
    if stored.location:
        headers["Location"] = stored.location
    if stored.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(stored.body, status_code=stored.status, media_type=JSON, headers=headers)


def json_response(payload: Any, correlation_id: str, status: int = 200) -> Response:
    headers = {"X-Request-Id": correlation_id}
    return Response(dumps(payload), status, media_type=JSON, headers=headers)


async def idempotent_post(request: Request, limit: int, model: type[B], act: Act[B]) -> Response:
    """A POST done once per (merchant, Idempotency-Key): its body read within ``limit`` and
    parsed as ``model``, then ``act`` in the transaction that stores its answer."""
    raw = await read_body(request, limit)
    merchant_id = await merchant(request)
    key = check_idempotency_key(request.headers.get("idempotency-key"))
    body = parse_body(model, raw)
    correlation = correlation_id(request)
    fingerprint = request_hash("POST", path(request), body.model_dump(mode="json"))

    async def work(conn: AsyncConnection[Any]) -> Answer:
        return await act(conn, merchant_id, body, correlation)

    done = await run_once(services_of(request).pool, merchant_id, key, fingerprint, work)
    return answer(done, correlation)
