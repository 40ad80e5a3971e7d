"""What every merchant route does with its request and answer: who sent it, its body (bounded),
its path for idempotency, and the JSON answer with the request's id."""

from __future__ import annotations

from typing import Any, Final

from fastapi import Request, Response

from workers.api.errors import ApiError
from workers.api.idempotency import Answer
from workers.api.payments import dumps
from workers.api.request_context import correlation_id
from workers.api.services import services_of

JSON: Final = "application/json"


async def merchant_of(request: Request) -> str:
    """Who sent the request (401 without a valid key; 429 over the key's rate limit)."""
    caller = await services_of(request).auth.admit(request.headers.get("authorization"))
    return caller.merchant_id


def correlation(_request: Request) -> str:
    return correlation_id()


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and content_type != JSON:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json")
    return body


def path_of(request: Request) -> str:
    """``request.url.path``, without building the whole URL (host header parsing and all)."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"Request bodies are limited to {limit} bytes")


def answer_response(answer: Answer, correlation_id: str) -> Response:
    headers = {"X-Request-Id": correlation_id}
    if answer.location:
        headers["Location"] = answer.location
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(answer.body, status_code=answer.status, media_type=JSON, headers=headers)


def json_response(payload: Any, correlation_id: str, status: int = 200) -> Response:
    return Response(
        dumps(payload), status, media_type=JSON, headers={"X-Request-Id": correlation_id}
    )
