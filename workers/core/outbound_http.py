"""The transport of FlowPay's outbound HTTP: httpx's client over aiohttp's connection pool.

The processor's gateway calls and the notifier's webhooks keep httpx's API (requests, responses,
timeouts, exceptions); only the transport differs. httpx's own pool (httpcore on anyio) scans
every pooled connection on each request, polling each socket, and wraps each read and write in a
cancel scope: on a pool of hundreds of connections that is most of a call's CPU. aiohttp keys its
pool by host and parses HTTP in C, for about a fifth of the CPU per call.

Errors: ``httpx_aiohttp`` turns aiohttp's into httpx's; an aiohttp error it leaves as it is
(a malformed answer, say) is raised as ``httpx.TransportError``, so callers catch httpx's tree
alone. Proxies from the environment are never used; redirects never followed.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class PooledTransport(AiohttpTransport):
    """Up to ``max_connections`` kept-alive connections, over every host together.

    ``resolver`` finds a host's addresses (aiohttp's default: the system's, in a thread); it
    is asked on each new connection, never from a cache.
    """

    def __init__(
        self,
        max_connections: int,
        keepalive_s: float = 5.0,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        super().__init__(
            limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=keepalive_s),
            client=self._session,
        )
        self._resolver = resolver

    def _session(self) -> aiohttp.ClientSession:
        # Built on the first request, inside the event loop that will use it.
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context if isinstance(self.ssl_context, ssl.SSLContext) else True,
            resolver=self._resolver,
            use_dns_cache=False,
        )
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}", request=request) from exc
