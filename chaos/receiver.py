"""The merchants' webhook server: verifies each signature, records what it got, and misbehaves
when told to (answers 503, or hangs past the notifier's timeout) for a while.

Each merchant's endpoint is ``/hooks/<merchant id>``, so the receiver knows whose secret signs it.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from workers.core.webhooks import InvalidSignature, verify

HEALTHY, FAILING, HANGING = "healthy", "failing", "hanging"


@dataclass(frozen=True)
class Receipt:
    merchant_id: str
    webhook_id: str
    body: dict[str, Any]
    signature_ok: bool
    answered: int  # the status sent back; 0: hung, no answer in time


@dataclass
class Receiver:
    port: int
    secrets: dict[str, str] = field(default_factory=dict)  # merchant id -> whsec_...
    mode: str = HEALTHY
    hang_s: float = 3.0
    got: list[Receipt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, merchant_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{merchant_id}"

    def receipts(self) -> list[Receipt]:
        with self.lock:
            return list(self.got)

    def take(self, merchant_id: str, headers: dict[str, str], raw: bytes) -> Receipt:
        secret = self.secrets.get(merchant_id, "")
        try:
            body, ok = verify(raw, headers, secret), True
        except (InvalidSignature, ValueError):
            body, ok = {"unreadable": raw.decode("utf-8", "replace")}, False
        mode = self.mode
        answer = {HEALTHY: 200, FAILING: 503, HANGING: 0}[mode] if ok else 400
        receipt = Receipt(merchant_id, headers.get("webhook-id", ""), body, ok, answer)
        with self.lock:
            self.got.append(receipt)
        return receipt


@contextmanager
def receiving(port: int) -> Iterator[Receiver]:
    state = Receiver(port)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            merchant_id = self.path.rsplit("/", 1)[-1]
            headers = {k.lower(): v for k, v in self.headers.items()}
            receipt = state.take(merchant_id, headers, raw)
            if receipt.answered == 0:
                time.sleep(state.hang_s)
                self.close_connection = True
                return
            self.send_response(receipt.answered)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    with serving(port, Handler):
        yield state


@contextmanager
def serving(port: int, handler: type[BaseHTTPRequestHandler]) -> Iterator[None]:
    """An HTTP server on 127.0.0.1:``port`` in a thread of its own, until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    with running(server):
        yield


@contextmanager
def running(server: socketserver.BaseServer) -> Iterator[None]:
    """``server`` serving in a thread of its own until the block ends; then shut and closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
