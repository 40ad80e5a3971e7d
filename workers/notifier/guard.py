"""The notifier's HTTP transport: every connection goes to an address checked just before.

The host of an endpoint is resolved on each new connection (never from a cache), every address
it resolves to is checked against ``workers.core.webhook_urls`` (a name that resolved to a
public address at registration may point inside the network now), and the connection is made to
the checked address itself, so there is no second lookup an attacker's DNS could answer
differently. A host written as an address, in any form the system would take (``2130706433``
is 127.0.0.1), is checked before anything is sent. TLS still verifies, and SNI and ``Host``
still name, the endpoint's host. Redirects are never followed.
"""

from __future__ import annotations

import socket
from ipaddress import ip_address

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from workers.core.config import NotifierSettings
from workers.core.outbound_http import PooledTransport
from workers.core.webhook_urls import check_address, check_scheme, literal_address


class GuardedResolver(AbstractResolver):
    """The system's resolver, refusing a host when any of its addresses is not allowed."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self._system = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._system.resolve(host, port, family)
        for each in found:
            check_address(host, ip_address(each["host"].split("%", 1)[0]), self.settings)
        return found

    async def close(self) -> None:
        await self._system.close()


class GuardedTransport(PooledTransport):
    """The pooled transport over ``GuardedResolver``; refuses a scheme the rules do not allow."""

    def __init__(self, settings: NotifierSettings, max_connections: int) -> None:
        super().__init__(max_connections, 5.0, lambda: GuardedResolver(settings))
        self.settings = settings

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_scheme(request.url.scheme, self.settings)
        host = request.url.host
        literal = literal_address(host)
        if literal is not None:  # an address is connected to as it is, never resolved
            check_address(host, literal, self.settings)
        return await super().handle_async_request(request)
