"""The Stripe SDK's HTTP calls on FlowPay's outbound HTTP (``workers.core.outbound_http``).

The SDK's own httpx client read every answer whole, however large, decoded whatever encoding
it claimed, and kept the cookies a server set (sending them back on the next call). Over
``Outbound`` an answer is read up to its bound and uncompressed, no cookie is kept, and a lost
exchange is the same ``httpx`` error as for the simulator; the SDK gets each failure as its
``APIConnectionError``, caused by that error (``stripe_outcomes.verdict`` reads the cause).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Mapping
from typing import Any, NoReturn

import httpx
import stripe

from workers.core.outbound_http import Outbound, PooledTransport


class StripeHTTP(stripe.HTTPClient):
    """``stripe.HTTPClient`` for the SDK's async calls, over at most ``max_connections`` kept
    alive; each phase of a call (connect, write, read, waiting for a connection) within
    ``timeout_s``."""

    name = "flowpay"

    def __init__(self, timeout_s: float, max_connections: int) -> None:
        super().__init__()
        self._outbound = Outbound(PooledTransport(max_connections), timeout_s)

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        content = post_data.encode() if isinstance(post_data, str) else post_data
        request = self._outbound.request(method.upper(), url, headers=headers, content=content)
        try:
            response = await self._outbound.send(request)
        except httpx.TransportError as exc:
            _connection_error(exc)
        return response.content, response.status_code, response.headers

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[AsyncIterable[bytes], int, Mapping[str, str]]:
        raise NotImplementedError("FlowPay reads no streamed answer from Stripe")

    async def close_async(self) -> None:
        await self._outbound.aclose()

    async def sleep_async(self, secs: float) -> None:
        await asyncio.sleep(secs)


def _connection_error(exc: httpx.TransportError) -> NoReturn:
    raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
        f"no answer from Stripe ({type(exc).__name__})", should_retry=True
    ) from exc
