"""A real HTTP server in front of stripe-mock that answers chosen requests with Stripe's faults.

stripe-mock answers every valid request with success; what Stripe also does (429, 409, 5xx,
``Stripe-Should-Retry``, a card error, an answer that never comes) this front serves, one
fault per request in order, then passes requests through. It records each request's headers,
so tests see the ``Idempotency-Key`` of every attempt.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.helpers.servers import free_port

FORWARDED = ("authorization", "content-type", "idempotency-key", "stripe-version", "stripe-account")


@dataclass(frozen=True)
class Fault:
    status: int = 500
    error: dict[str, str] = field(default_factory=lambda: {"type": "api_error"})
    headers: dict[str, str] = field(default_factory=dict)
    hold_s: float = 0.0  # wait this long before answering (past the client's deadline)
    # Served only to a request whose path contains this (None: the next request, whatever it is).
    path: str | None = None
    # The answer's body instead of Stripe's error envelope (what Stripe answers that
    # stripe-mock's one fixture per resource cannot: a PaymentIntent canceled, say).
    body: dict[str, object] | None = None


@dataclass
class Front:
    url: str
    faults: list[Fault]
    seen: list[dict[str, str]] = field(default_factory=list)

    def keys(self) -> list[str | None]:
        """The Idempotency-Key of each request, in order."""
        return [h.get("idempotency-key") for h in self.seen]


@contextmanager
def faulty_front(upstream: str, *faults: Fault) -> Iterator[Front]:
    port = free_port()
    front = Front(f"http://127.0.0.1:{port}", list(faults))
    lock = threading.Lock()
    client = httpx.Client(base_url=upstream, timeout=10)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with lock:
                front.seen.append({k.lower(): v for k, v in self.headers.items()})
                fault = _take(front.faults, self.path)
            if fault is None:
                self._forward(body)
            else:
                self._fault(fault)

        def _forward(self, body: bytes) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
            answer = client.request(self.command, self.path, content=body, headers=headers)
            self._send(answer.status_code, answer.content, {})

        def _fault(self, fault: Fault) -> None:
            if fault.hold_s:
                time.sleep(fault.hold_s)
            answer = fault.body or {"error": {"message": "fault", **fault.error}}
            body = json.dumps(answer).encode()
            self._send(fault.status, body, fault.headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting: what a held fault is for

        do_GET = _serve
        do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()
        client.close()


def _take(faults: list[Fault], path: str) -> Fault | None:
    """The first fault meant for a request to ``path``, taken off the list."""
    for n, fault in enumerate(faults):
        if fault.path is None or fault.path in path:
            return faults.pop(n)
    return None
