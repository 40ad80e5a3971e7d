"""RequestRoute: the hot path's route calls its endpoint directly, so it takes nothing else."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from workers.api.routing import RequestRoute


def test_an_endpoint_of_the_request_alone_is_called_with_it() -> None:
    app = FastAPI()

    async def echo(request: Request) -> Response:
        return Response(request.scope["path"].encode(), status_code=202)

    app.router.add_api_route("/echo", echo, methods=["POST"], route_class_override=RequestRoute)
    answer = TestClient(app).post("/echo")
    assert (answer.status_code, answer.text) == (202, "/echo")
    assert "/echo" in app.openapi()["paths"]  # still documented like any route


def test_an_endpoint_that_wants_more_than_the_request_is_refused() -> None:
    app = FastAPI()

    async def wants_a_query(request: Request, limit: int = 10) -> Response:
        return Response(str(limit))

    with pytest.raises(TypeError, match="takes one Request"):
        app.router.add_api_route(
            "/more", wants_a_query, methods=["GET"], route_class_override=RequestRoute
        )
