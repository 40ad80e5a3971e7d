"""Reading an event stream of a running API in a test: every line and event, as they come."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from workers.api.client import StreamEvent, sse_events
from workers.core import local_http


@dataclass(kw_only=True)
class Recording:
    """Where a stream's answer goes: its status, or its lines and events as they come (keyword
    fields, so that a reader adds its own positional ones)."""

    status: int = 0
    body: bytes = b""
    lines: list[str] = field(default_factory=list)
    events: list[StreamEvent] = field(default_factory=list)
    ended: bool = False


async def record(
    into: Recording,
    api_url: str,
    path: str,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> None:
    """Read until the server ends the stream (``ended``), or hang up after ``stop_after``
    events; a refusal's body goes to ``body``."""
    async with (
        httpx.AsyncClient(base_url=api_url, timeout=30, verify=local_http.tls_context()) as http,
        http.stream("GET", path, headers=headers, params=params) as response,
    ):
        into.status = response.status_code
        if response.status_code != 200:
            into.body = await response.aread()
            return
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in sse_events(_tap(response, into.lines)):
            into.events.append(event)
            if len(into.events) == stop_after:
                return
    into.ended = True


async def _tap(response: httpx.Response, lines: list[str]) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        lines.append(line)
        yield line
