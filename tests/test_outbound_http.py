"""The outbound transport raises httpx's errors as httpcore would: only a timeout is a timeout.

Against real sockets on 127.0.0.1, each server misbehaving in one way. What an error is decides
what FlowPay records (a gateway attempt's outcome, a webhook attempt's error), so a lost
connection must never read as a timeout, nor a timeout as a lost connection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest

from workers.core.outbound_http import AnswerRefused, Outbound, PooledTransport

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)  # the body, b"{}"
        writer.write(OK + b'{"ok": true}')
        await writer.drain()


async def _close_unanswered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def _never_answer(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up and closes


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    writer.close()


async def _body_cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await writer.drain()
    writer.close()


async def _post(serve: Serve | None, timeout_s: float = 5.0) -> httpx.Response:
    """One POST of ``{}`` to a server doing ``serve`` (None: to a port nothing listens on)."""
    if serve is None:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        return await _send(port, timeout_s)
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        return await _send(server.sockets[0].getsockname()[1], timeout_s)


async def _send(port: int, timeout_s: float) -> httpx.Response:
    async with httpx.AsyncClient(transport=PooledTransport(4), timeout=timeout_s) as client:
        return await client.post(f"http://127.0.0.1:{port}/", content=b"{}")


def test_an_answer_comes_through_and_its_connection_is_kept() -> None:
    async def twice() -> list[httpx.Response]:
        server = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with server, httpx.AsyncClient(transport=PooledTransport(4)) as client:
            # The server answers on one connection only: a second would wait for ever.
            return [await client.post(url, content=b"{}") for _ in range(2)]

    answers = asyncio.run(twice())
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"ok": True})] * 2


@pytest.mark.parametrize(
    ("serve", "raised"),
    [
        (None, httpx.ConnectError),
        (_close_unanswered, httpx.RemoteProtocolError),
        (_garbage, httpx.TransportError),
        (_body_cut_short, httpx.TransportError),
    ],
    ids=["refused", "closed-unanswered", "not-http", "body-cut-short"],
)
def test_a_lost_or_broken_exchange_is_a_transport_error_never_a_timeout(
    serve: Serve | None, raised: type[httpx.TransportError]
) -> None:
    with pytest.raises(raised) as caught:
        asyncio.run(_post(serve))
    assert not isinstance(caught.value, httpx.TimeoutException), repr(caught.value)


def test_no_answer_in_time_is_a_read_timeout() -> None:
    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(_post(_never_answer, timeout_s=0.2))


class _ClosesKeptAlive:
    """Answers the first request of each connection, then closes it when the next one comes."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        self.requests += 1
        writer.write(OK + b'{"ok": true}')
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        writer.close()  # as a server whose idle timeout ran out as the request came


async def _post_twice(headers: dict[str, str]) -> tuple[list[int | str], int]:
    serve = _ClosesKeptAlive()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    outcomes: list[int | str] = []
    async with server, httpx.AsyncClient(transport=PooledTransport(4)) as client:
        for _ in range(2):
            try:
                outcomes.append(
                    (await client.post(url, content=b"{}", headers=headers)).status_code
                )
            except httpx.TransportError as exc:
                outcomes.append(type(exc).__name__)
    return outcomes, serve.requests


@pytest.mark.parametrize("key", ["Idempotency-Key", "webhook-id"])
def test_a_keyed_request_on_a_kept_alive_connection_closed_unanswered_is_sent_again(
    key: str,
) -> None:
    outcomes, requests = asyncio.run(_post_twice({key: "pay_1"}))
    assert outcomes == [200, 200]
    assert requests == 3  # the second request reached the server twice: once closed, once answered


def test_an_unkeyed_post_closed_unanswered_is_never_sent_again() -> None:
    outcomes, requests = asyncio.run(_post_twice({}))
    assert outcomes == [200, "RemoteProtocolError"]
    assert requests == 2


def test_a_keyed_request_on_a_fresh_connection_closed_unanswered_is_not_sent_again() -> None:
    requests = 0

    async def close_unanswered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        requests += 1
        await _close_unanswered(reader, writer)

    async def post() -> None:
        server = await asyncio.start_server(close_unanswered, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with server, httpx.AsyncClient(transport=PooledTransport(4)) as client:
            await client.post(url, content=b"{}", headers={"webhook-id": "msg_1"})

    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(post())
    assert requests == 1


def test_a_servers_cookies_are_neither_kept_nor_sent_back() -> None:
    heads: list[bytes] = []

    async def sets_cookies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(2)
            writer.write(OK.replace(b"\r\n\r\n", b"\r\nSet-Cookie: s=1; Path=/\r\n\r\n"))
            writer.write(b'{"ok": true}')
            await writer.drain()

    async def twice() -> list[httpx.Response]:
        server = await asyncio.start_server(sets_cookies, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with server, Outbound(PooledTransport(4), 5.0) as http:
            return [await http.send(http.request("POST", url, content=b"{}")) for _ in range(2)]

    answers = asyncio.run(twice())
    assert [(a.status_code, a.json(), dict(a.cookies)) for a in answers] == [
        (200, {"ok": True}, {"s": "1"})
    ] * 2
    assert len(heads) == 2
    assert not any(b"cookie:" in head.lower() for head in heads)


def test_an_answer_over_the_bound_is_refused_and_its_connection_closed() -> None:
    sent: list[int] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 16384
        try:
            while True:  # until the client closes the connection
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                sent.append(len(chunk))
        except ConnectionError:
            pass

    async def post() -> None:
        server = await asyncio.start_server(endless, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with server, Outbound(PooledTransport(4), 5.0, max_answer_bytes=100_000) as http:
            async with asyncio.timeout(30):  # without a bound the read would never end
                await http.send(http.request("POST", url, content=b"{}"))

    with pytest.raises(AnswerRefused, match="over 100000 bytes"):
        asyncio.run(post())
    # The server stopped once the client closed: it sent little more than the bound and
    # what the sockets' buffers hold, not an endless stream.
    assert sum(sent) < 100_000 + 16 * 1024 * 1024
