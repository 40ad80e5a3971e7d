"""The API's Prometheus metrics: requests by method, route and status, with their latency.

A plain ASGI middleware (no per-request task or body copy) records each request once, under
its route's template (``/v1/payments/{payment_id}``), so that ids never become label values.

The metrics port is served by the process that runs ``serve-api``. With one server process
that is the process answering requests. With several, uvicorn's supervisor serves it and the
server processes record into prometheus-client's multiprocess directory, which the supervisor
adds up at each scrape (gauges: the largest live value).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.core.config import Settings
from workers.core.metrics import serve_metrics

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED: Final = "unmatched"
API_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

REQUESTS = Counter(
    "flowpay_api_requests",
    "HTTP requests by method, route and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "flowpay_api_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method, route and status.",
    ["method", "route", "status"],
    buckets=API_BUCKETS,
)

_Series = tuple[Counter, Histogram]
_series: dict[tuple[str, str, int], _Series] = {}


def _for(method: str, route: str, status: int) -> _Series:
    key = (method, route, status)
    found = _series.get(key)
    if found is None:
        labels = (method, route, str(status))
        found = _series[key] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
    return found


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when an exception escapes every handler

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router put the matched route in the scope on the way in.
            route = getattr(scope.get("route"), "path", UNMATCHED)
            requests, latency = _for(scope["method"], route, status)
            requests.inc()
            latency.observe(time.perf_counter() - started)


@contextmanager
def exposed(settings: Settings, workers: int) -> Iterator[None]:
    """Serve the API's metrics while the block (uvicorn) runs."""
    port = settings.metrics.api_port
    if not settings.metrics.enabled or port == 0 or workers == 1:
        serve_metrics(settings, port)
        yield
        return
    # Server processes are spawned: they import prometheus-client with this set.
    directory = tempfile.mkdtemp(prefix="flowpay-api-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    serve_metrics(settings, port, registry)
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)
