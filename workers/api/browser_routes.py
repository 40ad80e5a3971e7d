"""What a browser may do with a payment's client secret (``client_secrets``), as routes: read
the payment's reduced view, and the CORS preflight of that and of its event stream.

``GET /v1/payments/{id}`` and ``.../events`` are the merchant's routes; each hands a request
carrying ``client_secret`` over to here (``read_payment``) or to the stream's browser branch.
The preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
for an allowed origin with a valid secret, refused otherwise; a plain ``OPTIONS`` gets ``Allow``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request, Response

from workers.api import client_secrets, handling, openapi, payments
from workers.api.client_secrets import Browser, browser_view
from workers.api.errors import codes
from workers.api.routing import allowed_methods
from workers.api.services import services_of

ClientSecret = Annotated[
    str | None,
    Query(
        max_length=client_secrets.MAX_LENGTH,
        description="For a browser, instead of the API key: the payment's `client_secret`, "
        "which opens this payment alone (a reduced view, CORS for the merchant's origins)",
        examples=[openapi.PAYMENT_ID_EXAMPLE + "_secret_Jq3sVw0aL9yXc2RtB5nM7pKd"],
    ),
]
# What a browser may send beyond the CORS-safelisted: EventSource's, when it reconnects.
ALLOWED_HEADERS: Final = "Last-Event-ID, Cache-Control"
PREFLIGHT_CACHE_S: Final = "600"
_HEADER = {"schema": {"type": "string"}}
_PREFLIGHT_PARAMETERS: Final = [
    {"name": "Origin", "in": "header", "required": False,
     "description": "The page's origin (`scheme://host[:port]`), as the browser sends it",
     "schema": {"type": "string", "examples": ["https://shop.example"]}},
    {"name": "Access-Control-Request-Method", "in": "header", "required": False,
     "description": "The method the browser means to send (`GET`)",
     "schema": {"type": "string", "examples": ["GET"]}},
]  # fmt: skip
_PREFLIGHT_ANSWER: Final = {
    "description": "A CORS preflight answered (with Access-Control-Allow-Origin when the page's "
    "origin may use the secret), or, without Origin and Access-Control-Request-Method, the "
    "methods the path takes",
    "headers": {
        "X-Request-Id": openapi.REQUEST_ID,
        "Allow": _HEADER,
        "Access-Control-Allow-Origin": _HEADER,
        "Access-Control-Allow-Methods": _HEADER,
        "Access-Control-Allow-Headers": _HEADER,
        "Access-Control-Max-Age": _HEADER,
    },
}


async def admit(request: Request, payment_id: str, secret: str) -> Browser:
    """The request's client secret checked for ``payment_id``, with its page's Origin."""
    origin = request.headers.get("origin")
    return await client_secrets.admit(services_of(request), payment_id, secret, origin)


async def read_payment(request: Request, payment_id: str, secret: str) -> Response:
    """``GET /v1/payments/{id}?client_secret=``: the payment's reduced view."""
    browser = await admit(request, payment_id, secret)
    payment = await payments.get_payment(services_of(request).pool, browser.merchant_id, payment_id)
    response = handling.json_response(browser_view(payment), handling.correlation_id(request))
    response.headers.update(browser.cors_headers())
    return response


def router() -> APIRouter:
    """The preflights of the routes a client secret opens."""
    routes = APIRouter()
    for path, operation_id, what in (
        ("/v1/payments/{payment_id}", "preflightPayment", "reading a payment"),
        ("/v1/payments/{payment_id}/events", "preflightPaymentEvents", "following a payment"),
    ):
        routes.add_api_route(
            path, preflight, methods=["OPTIONS"], status_code=204, response_model=None,
            **openapi.operation(
                operation_id, f"CORS preflight of {what} with its client secret",
                tag="payments", authenticated=False, parameters=_PREFLIGHT_PARAMETERS,
                errors=codes(
                    "client_secret_invalid", "origin_not_allowed", "parameter_invalid",
                    "rate_limited", "service_unavailable",
                ),
                answers={"204": _PREFLIGHT_ANSWER},
            ),
        )  # fmt: skip
    return routes


async def preflight(
    request: Request, payment_id: openapi.PaymentId, client_secret: ClientSecret = None
) -> Response:
    headers = {"X-Request-Id": handling.correlation_id(request)}
    asked = request.headers.get("access-control-request-method")
    if request.headers.get("origin") is None or asked is None:
        headers["Allow"] = allowed_methods(request.app.router.routes, request.scope)
        return Response(status_code=204, headers=headers)
    if client_secret is None:
        raise client_secrets.origin_refused()
    browser = await admit(request, payment_id, client_secret)
    headers |= _cors_preflight(browser)
    return Response(status_code=204, headers=headers)


def _cors_preflight(browser: Browser) -> dict[str, Any]:
    return {
        **browser.cors_headers(),
        "Access-Control-Allow-Methods": "GET",
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": PREFLIGHT_CACHE_S,
    }
