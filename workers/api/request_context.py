"""Every request's correlation id and span (a plain ASGI middleware, cheap on the hot path).

The correlation id is the caller's ``X-Request-Id`` (or a new one): it is bound for the log
lines of the request, stored in the events the request creates (their envelope and
``ce_correlationid`` header), and returned in the response's ``X-Request-Id``, errors included.
With tracing on, the request is a server span (a child of the caller's ``traceparent``), the
root of the payment's trace.

It is also the outermost of FlowPay's layers, so an exception that escapes every handler ends
here: logged with its traceback, answered 500 in the error envelope with the request's id (a
failure is the request an operator most needs to find in the logs).
"""

from __future__ import annotations

import logging
from typing import Final

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.api.errors import API_ERROR, ApiError
from workers.api.payments import dumps
from workers.core import correlation, tracing

log = logging.getLogger(__name__)

REQUEST_ID: Final = b"x-request-id"
_WANTED: Final = frozenset({REQUEST_ID, b"traceparent", b"tracestate"})
_INTERNAL: Final = dumps(
    ApiError(500, "internal_error", "Something went wrong on our side", type_=API_ERROR).envelope()
)


def correlation_id() -> str:
    """The id of the request in hand (bound by the middleware)."""
    return correlation.current()["correlation_id"]


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _WANTED}
        request_id = correlation.request_id(headers.get("x-request-id"))
        echoed = (REQUEST_ID, request_id.encode("latin-1"))

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                sent = message.setdefault("headers", [])
                if not any(name.lower() == REQUEST_ID for name, _ in sent):
                    message["headers"] = [*sent, echoed]
            await send(message)

        with (
            correlation.bound(correlation_id=request_id),
            tracing.span(
                f"{scope['method']} {scope['path']}",
                kind=SpanKind.SERVER,
                parent=tracing.parent_of(list(headers.items())) if tracing.enabled() else None,
                attributes={"flowpay.correlation_id": request_id},
            ) as span,
        ):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                if started:
                    raise  # the answer is under way: only the server can cut it short
                log.exception("unexpected error")
                await _internal_error(send_with_id)
            route = scope.get("route")
            if span is not None and route is not None:
                span.update_name(f"{scope['method']} {route.path}")


async def _internal_error(send: Send) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_INTERNAL))]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": _INTERNAL})
