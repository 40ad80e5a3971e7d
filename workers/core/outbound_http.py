"""FlowPay's outbound HTTP: httpx's requests over aiohttp's connection pool.

The processor's gateway calls and the notifier's webhooks keep httpx's API (requests, responses,
timeouts, exceptions); the transport and the client differ. ``Outbound`` hands each request
straight to the transport: httpx's client adds auth, redirects, cookies and event hooks, which
outbound calls never use, and they were most of a call's CPU outside the transport.

httpx's own pool (httpcore on anyio) scans every pooled connection on each request, polling each
socket, and wraps each read and write in a cancel scope: on a pool of hundreds of connections
that is most of a call's CPU. aiohttp keys its pool by host and parses HTTP in C, for about a
fifth of the CPU per call.

Errors are httpx's alone, as httpcore would raise them: ``httpx_aiohttp`` maps aiohttp's, but
maps every lost connection to ``ConnectTimeout``; here only a timeout is a timeout:

* a connection that could not be made: ``httpx.ConnectError``;
* one lost or broken during the exchange: ``httpx.RemoteProtocolError`` (the server closed it)
  or ``httpx.ReadError``;
* any other aiohttp error (a malformed answer): ``httpx.TransportError``.

A server may close a kept-alive connection at any moment, without saying so first (RFC 9112
9.3.1). A request sent on a reused connection that the server closed before answering is sent
again on another connection when its receiver can tell the copies apart: its method is
idempotent, or it carries a key the receiver dedupes by (a gateway's ``Idempotency-Key``, a
webhook's ``webhook-id``). Each such try drops one pooled connection, so the retries end.

Proxies from the environment are never used; redirects never followed; cookies never kept (a
hostile server's would grow a jar without end) nor sent. Answers are asked for uncompressed
(a compressed one could expand far beyond what was read), and ``send`` reads at most
``max_answer_bytes`` of one:

* ``AnswerRefused`` (an ``httpx.TransportError``): an answer too large, or compressed unasked.
"""

from __future__ import annotations

import ssl
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.tracing import Trace

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
DEDUPE_KEYS: Final = ("idempotency-key", "webhook-id")
MAX_ANSWER_BYTES: Final = 1024 * 1024


class AnswerRefused(httpx.TransportError):
    """An answer ``send`` will not read: larger than its bound, or compressed though not asked."""


class Outbound:
    """Requests to ``transport``, each with ``timeout_s`` for every phase (connect, pool, write,
    read) and ``headers`` under its own; answers read whole up to ``max_answer_bytes``. Used as
    an async context manager, or closed."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.transport = transport
        self._extensions = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self._headers = {"Accept": "*/*", "Accept-Encoding": "identity", **(headers or {})}
        self._max_answer_bytes = max_answer_bytes

    def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Request:
        return httpx.Request(
            method,
            url,
            headers={**self._headers, **(headers or {})},
            content=content,
            extensions=self._extensions,
        )

    @asynccontextmanager
    async def stream(self, request: httpx.Request) -> AsyncIterator[httpx.Response]:
        """The answer, its body still to be read; closed when the block ends."""
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            yield response
        finally:
            await response.aclose()

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The answer, read whole; ``AnswerRefused`` (its connection closed, the rest unread)
        when it is larger than ``max_answer_bytes`` or compressed."""
        async with self.stream(request) as response:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise AnswerRefused(f"answer compressed unasked ({encoding[:40]})", request=request)
            body = bytearray()
            async for chunk in response.aiter_bytes():  # identity: as they came
                body += chunk
                if len(body) > self._max_answer_bytes:
                    raise AnswerRefused(
                        f"answer over {self._max_answer_bytes} bytes", request=request
                    )
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=bytes(body),
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Outbound:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


class _Attempt:
    """Whether the connection one try of a request was sent on came from the pool."""

    reused = False


_ATTEMPT: ContextVar[_Attempt] = ContextVar("outbound_http_attempt")


class PooledTransport(AiohttpTransport):
    """Up to ``max_connections`` kept-alive connections, over every host together.

    ``resolver`` makes what finds a host's addresses (aiohttp's default: the system's, in a
    thread), in the event loop, on the first request; it is asked on each new connection,
    never from a cache.
    """

    def __init__(
        self,
        max_connections: int,
        keepalive_s: float = 5.0,
        resolver: Callable[[], aiohttp.abc.AbstractResolver] | None = None,
    ) -> None:
        super().__init__(
            limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=keepalive_s),
            client=self._session,
        )
        self._resolver = resolver

    def _session(self) -> aiohttp.ClientSession:
        # Built on the first request, inside the event loop that will use it.
        connector = _Connector(
            self.limits.max_connections or 0,
            self.limits.keepalive_expiry,
            self.ssl_context,
            self._resolver() if self._resolver else None,
        )
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        while True:
            attempt = _Attempt()
            token = _ATTEMPT.set(attempt)
            try:
                with _as_httpx(request):
                    response = await super().handle_async_request(request)
                break
            except httpx.TransportError as exc:
                if not (attempt.reused and _closed_unanswered(exc) and _replayable(request)):
                    raise
            finally:
                _ATTEMPT.reset(token)
        response.stream = _Body(response.stream, request)
        return response


class _Connector(aiohttp.TCPConnector):
    """Notes, in the attempt in hand, whether the connection it gives was used before.

    Not through aiohttp's tracing: a trace config makes every request await a dozen signals,
    about 30 us of CPU a request."""

    def __init__(
        self,
        limit: int,
        keepalive_s: float | None,
        ssl_context: ssl.SSLContext,
        resolver: aiohttp.abc.AbstractResolver | None,
    ) -> None:
        super().__init__(
            limit=limit,
            limit_per_host=0,
            keepalive_timeout=keepalive_s,
            ssl=ssl_context,
            resolver=resolver,
            use_dns_cache=False,
        )
        self._used: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.connector.Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            if protocol in self._used:
                attempt = _ATTEMPT.get(None)
                if attempt is not None:
                    attempt.reused = True
            else:
                self._used.add(protocol)
        return connection


def _closed_unanswered(exc: httpx.TransportError) -> bool:
    """Whether the server closed the connection before any answer (not a refused connect)."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError) and not (
        isinstance(cause, aiohttp.ClientConnectorError)
    )


def _replayable(request: httpx.Request) -> bool:
    """Whether the receiver can tell a second copy of ``request`` from a new request."""
    if not isinstance(request.stream, httpx.ByteStream):
        return False  # a streamed body cannot be sent twice
    return request.method in IDEMPOTENT_METHODS or any(k in request.headers for k in DEDUPE_KEYS)


class _Body(httpx.AsyncByteStream):
    """An answer's body, its errors as ``_as_httpx`` gives them."""

    def __init__(self, body: httpx.AsyncByteStream | httpx.SyncByteStream, request: httpx.Request):
        assert isinstance(body, httpx.AsyncByteStream)
        self._body, self._request = body, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx(self._request):
            async for chunk in self._body:
                yield chunk

    async def aclose(self) -> None:
        with _as_httpx(self._request):
            await self._body.aclose()


@contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, TimeoutError):
            raise
        raise _transport_error(cause, request) from cause
    except aiohttp.ClientError as exc:
        raise _transport_error(exc, request) from exc


def _transport_error(cause: BaseException, request: httpx.Request) -> httpx.TransportError:
    message = f"{type(cause).__name__}: {cause}"
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(cause, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return httpx.ReadError(message, request=request)
    return httpx.TransportError(message, request=request)
