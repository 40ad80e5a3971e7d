"""Routing: a route for endpoints that take the request alone, and what a path allows.

FastAPI's own handler solves the endpoint's dependencies for every request (parsing the query
string among them) and looks at what the endpoint returned. An endpoint of ``(request:
Request) -> Response`` needs none of it, so ``RequestRoute`` calls it directly: on the hot
path that saves a tenth of a request's CPU. Everything else stays FastAPI's: matching, the
exception handlers around the call, and the route's operation in the OpenAPI document.

``allowed_methods`` is what a 405's ``Allow`` lists: Starlette lists the methods of the first
route that matched the path, though each method of a path is a route of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class RequestRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        _check_request_only(self)
        handler: Handler = self.endpoint
        return handler


def _check_request_only(route: APIRoute) -> None:
    """Refuse an endpoint FastAPI would have to feed: it would get nothing but the request."""
    needs = route.dependant
    fed = (
        needs.path_params, needs.query_params, needs.header_params, needs.cookie_params,
        needs.body_params, needs.dependencies,
    )  # fmt: skip
    special = (
        needs.websocket_param_name, needs.http_connection_param_name, needs.response_param_name,
        needs.background_tasks_param_name, needs.security_scopes_param_name,
    )  # fmt: skip
    if needs.request_param_name is None or any(fed) or any(special):
        raise TypeError(f"{route.path}: a RequestRoute endpoint takes one Request, nothing else")


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """Every method some route takes at the request's path, for ``Allow`` (RFC 9110).

    Asked of each route as it would be for a request of that method, so that routes of
    included routers answer too.
    """
    return ", ".join(
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    )
