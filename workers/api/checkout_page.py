"""``GET /checkout``: the example checkout status page, served by serve-api itself.

Served by the API rather than by a role of its own: the local stack then has nothing more to
start and supervise, and the page is on the API's own origin, so it works with no origin
allowed. The same file (``static/checkout.html``) hosted on a merchant's own origin works
too once that origin is allowed (CORS); it takes the API's URL in its address.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from fastapi import APIRouter, Request, Response

from workers.api import handling, openapi

PATH: Final = "/checkout"
PAGE: Final = files("workers.api").joinpath("static/checkout.html").read_bytes()
# What the page may do: its own inline script and style, and connect to any API over HTTP(S).
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src http: https:; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_PAGE_ANSWER: Final = {
    "description": "The page (HTML); open it as `/checkout#payment=<id>&client_secret=<secret>`",
    "headers": {"X-Request-Id": openapi.REQUEST_ID},
    "content": {"text/html": {"schema": {"type": "string"}}},
}


def router() -> APIRouter:
    routes = APIRouter()

    @routes.get(
        PATH,
        response_model=None,
        **openapi.operation(
            "getCheckoutPage", "An example checkout page following a payment's status",
            tag="checkout", authenticated=False, answers={"200": _PAGE_ANSWER},
        ),
    )  # fmt: skip
    async def checkout_page(request: Request) -> Response:
        headers = {**HEADERS, "X-Request-Id": handling.correlation_id(request)}
        return Response(PAGE, media_type="text/html; charset=utf-8", headers=headers)

    return routes
