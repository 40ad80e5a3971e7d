"""The notifier's HTTP transport: every connection goes to an address checked just before.

The host of an endpoint is resolved on each new connection, every address it resolves to is
checked against ``workers.core.webhook_urls`` (a name that resolved to a public address at
registration may point inside the network now), and the connection is made to the checked
address itself, so there is no second lookup an attacker's DNS could answer differently. TLS
still verifies, and SNI and ``Host`` still name, the endpoint's host: httpcore takes both from
the request, not from the address connected to. Redirects are never followed (httpx's default).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from ipaddress import ip_address

import anyio
import httpcore
import httpx
from httpcore import SOCKET_OPTION, AnyIOBackend, AsyncNetworkBackend, AsyncNetworkStream

from workers.core.config import NotifierSettings
from workers.core.webhook_urls import IPAddress, check_address, check_scheme


class GuardedBackend(AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the rules allow."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self._direct = AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        with anyio.fail_after(timeout):
            addresses = await _resolve(host, port)
        for address in addresses:
            check_address(host, address, self.settings)
        error: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return await self._direct.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:  # the next address may answer
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._direct.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over ``GuardedBackend``; refuses a scheme the rules do not allow."""

    def __init__(self, settings: NotifierSettings, max_connections: int) -> None:
        super().__init__(trust_env=True)
        self.settings = settings
        # httpx takes no network backend of its own: its pool is replaced by one built as httpx
        # builds it, with this backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(settings),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_scheme(request.url.scheme, self.settings)
        return await super().handle_async_request(request)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    found = [ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    return list(dict.fromkeys(found))  # each address once, in the resolver's order
