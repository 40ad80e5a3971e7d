"""The process's client for FlowPay's own endpoints: each call stands alone but for the
connection, which is kept; the environment's proxies are not used."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.core import local_http


class _Seen:
    def __init__(self) -> None:
        self.cookies: list[str | None] = []
        self.peers: list[tuple[str, int]] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the connection open between requests
    seen: _Seen

    def do_GET(self) -> None:
        self.seen.cookies.append(self.headers.get("Cookie"))
        self.seen.peers.append(self.client_address)
        body = b"ok"
        self.send_response(200)
        self.send_header("Set-Cookie", "session=abc; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[tuple[str, _Seen]]:
    seen = _Seen()
    handler = type("Handler", (_Handler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def fresh_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A client made under this test's environment, and the process's own one back after."""
    local_http.client.cache_clear()
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing there
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    yield
    local_http.client().close()
    local_http.client.cache_clear()


def test_calls_keep_no_cookie_and_share_a_connection(
    server: tuple[str, _Seen], fresh_client: None
) -> None:
    url, seen = server
    answers = [local_http.client().get(url) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]  # not through the proxy
    assert seen.cookies == [None, None, None]  # the server's cookie never sent back
    assert len(set(seen.peers)) == 1  # one kept-alive connection for all three


def test_a_call_that_asks_for_its_own_connection_gets_one(
    server: tuple[str, _Seen], fresh_client: None
) -> None:
    url, seen = server
    for _ in range(2):
        assert local_http.client().get(url, headers={"Connection": "close"}).status_code == 200
    assert len(set(seen.peers)) == 2
