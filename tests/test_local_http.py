"""The client for FlowPay's own endpoints: each call stands alone but for the connection,
which is kept; the environment's proxies are not used."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
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
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    """A client made as the process's is, under an environment naming a proxy where nothing
    listens (the discard port); the process's own cached client is left alone."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    made = local_http.client.__wrapped__()
    yield made
    made.close()


def test_calls_keep_no_cookie_and_share_a_connection(
    server: tuple[str, _Seen], client: httpx.Client
) -> None:
    url, seen = server
    answers = [client.get(url) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]  # not through the proxy
    assert seen.cookies == [None, None, None]  # the server's cookie never sent back
    # Kept alive between calls (a stall past its keep-alive would open another, so not "one").
    assert len(set(seen.peers)) < len(answers)
