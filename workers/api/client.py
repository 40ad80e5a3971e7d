"""A small async client of FlowPay's merchant API (httpx), as a merchant's code would use it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final

import httpx

from workers.core.local_http import tls_context
from workers.core.status import TERMINAL

__all__ = ["TERMINAL", "ApiClient", "Reply", "StreamRefused"]
# A request refused for the key's rate limit is sent again this often at most, waiting what
# the answer's Retry-After says (up to a minute) each time.
RATE_LIMITED_TRIES: Final = 10
MAX_RETRY_AFTER_S: Final = 60.0


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    seconds: float
    replayed: bool

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error")
        return str(error.get("code")) if isinstance(error, dict) else None


class StreamRefused(Exception):
    """The API answered a stream request with an error rather than a stream."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"HTTP {reply.status}: {reply.error_code}")
        self.reply = reply


@dataclass(frozen=True)
class StreamEvent:
    id: str | None
    data: str
    event: str = "message"


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
    """The events of a ``text/event-stream``, parsed per the HTML standard (comments skipped)."""
    data: list[str] = []
    event_id: str | None = None
    event = ""
    async for line in lines:
        if not line:
            if data:
                yield StreamEvent(event_id, "\n".join(data), event or "message")
            data, event = [], ""
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            event_id = value
        elif name == "event":
            event = value


class ApiClient:
    def __init__(
        self, base_url: str, api_key: str, *, connections: int = 64, timeout_s: float = 30.0
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=timeout_s,
            verify=tls_context(),  # `flowpay pay` makes one client per worker
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._http.aclose()

    async def create_payment(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> Reply:
        return await self._post("/v1/payments", body, idempotency_key)

    async def get_payment(self, payment_id: str) -> Reply:
        return await self._send("GET", f"/v1/payments/{payment_id}")

    async def follow(
        self, payment_id: str, *, retry_s: float = 0.5
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The payment after each change until a final status, from its event stream.

        A cut stream is resumed with ``Last-Event-ID``: no change is missed or seen twice.
        """
        path = f"/v1/payments/{payment_id}/events"
        async with aclosing(self.stream(path, retry_s=retry_s)) as events:
            async for event in events:
                payment: dict[str, Any] = json.loads(event.data)
                yield payment
                if payment.get("status") in TERMINAL:
                    return

    async def stream(
        self,
        path: str,
        *,
        params: dict[str, str] | None = None,
        last_event_id: str | None = None,
        retry_s: float = 0.5,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Every event of the stream at ``path``, until the server answers 204; ``on_open``
        is called each time the server has taken the stream (and so where it starts).

        A cut stream (a lost connection, a 5xx) is resumed after the last event seen with
        ``Last-Event-ID``, and one refused for the key's limits (429) once ``Retry-After`` has
        passed: no event is missed or seen twice. Any other refusal raises ``StreamRefused``.
        """
        seen = last_event_id
        while True:
            headers = {"Last-Event-ID": seen} if seen is not None else {}
            wait = retry_s
            try:
                async with self._http.stream("GET", path, headers=headers, params=params) as got:
                    if got.status_code == 204:
                        return  # the event last seen was the stream's last
                    if got.status_code == 429:
                        wait = retry_after(got) or retry_s
                    elif 400 <= got.status_code < 500:
                        await got.aread()
                        raise StreamRefused(_reply(got))
                    elif got.status_code == 200:
                        if on_open is not None:
                            on_open()
                        async for event in sse_events(got.aiter_lines()):
                            seen = event.id
                            yield event
            except httpx.TransportError:
                pass
            await asyncio.sleep(wait)

    async def refund(
        self, payment_id: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> Reply:
        return await self._post(f"/v1/payments/{payment_id}/refunds", body, idempotency_key)

    async def capture(
        self, payment_id: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> Reply:
        return await self._post(f"/v1/payments/{payment_id}/capture", body, idempotency_key)

    async def cancel(
        self, payment_id: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> Reply:
        return await self._post(f"/v1/payments/{payment_id}/cancel", body, idempotency_key)

    async def create_payout(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> Reply:
        return await self._post("/v1/payouts", body, idempotency_key)

    async def balance(self) -> Reply:
        return await self._send("GET", "/v1/balance")

    async def _post(self, path: str, body: dict[str, Any], idempotency_key: str | None) -> Reply:
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return await self._send("POST", path, json=body, headers=headers)

    async def _send(self, method: str, path: str, **kwargs: Any) -> Reply:
        """The answer, after waiting out the key's rate limit: a request refused with 429 and
        Retry-After changed nothing (nor used its Idempotency-Key), so it is sent again once
        that has passed, up to ``RATE_LIMITED_TRIES`` times. The reply's time includes the
        waits, as the merchant lived it."""
        started = time.perf_counter()
        for _ in range(RATE_LIMITED_TRIES - 1):
            response = await self._http.request(method, path, **kwargs)
            wait = retry_after(response)
            if wait is None:
                break
            await asyncio.sleep(wait)
        else:
            response = await self._http.request(method, path, **kwargs)
        return _reply(response, time.perf_counter() - started)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before sending a rate-limited request again; None if it was not one."""
    retry_after = response.headers.get("Retry-After", "")
    if response.status_code != 429 or not retry_after.isdigit():
        return None
    return min(float(retry_after), MAX_RETRY_AFTER_S)


def _reply(response: httpx.Response, seconds: float | None = None) -> Reply:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"code": "not_json", "message": response.text[:200]}}
    return Reply(
        response.status_code,
        body if isinstance(body, dict) else {"data": body},
        response.elapsed.total_seconds() if seconds is None else seconds,
        response.headers.get("Idempotent-Replayed") == "true",
    )
