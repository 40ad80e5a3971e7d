"""Webhook endpoints that misbehave on purpose, on one real TCP server on 127.0.0.1.

The path of the URL says how an endpoint misbehaves (``BEHAVIOURS``). The server keeps, per
behaviour, every request it read and the most connections it had open at once.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

ZONELESS = "zoneless-retry-after"  # 503 with Retry-After as an HTTP date with no zone
NUL = "nul-bytes"  # 500 whose body starts with NUL bytes and invalid UTF-8
HUGE = "huge-body"  # 500 with a 100 MiB body
DRIP = "drip"  # a byte a second, for ever
SILENT = "silent"  # reads the request, never answers
BEHAVIOURS: Final = (ZONELESS, NUL, HUGE, DRIP, SILENT)
HUGE_BYTES: Final = 100 * 1024 * 1024
NUL_BODY: Final = b'\x00\x00{"error": "\xff\xfe\x00 oops"}'


@dataclass
class Hostile:
    port: int
    requests: Counter[str] = field(default_factory=Counter)
    open_now: Counter[str] = field(default_factory=Counter)
    most_open: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}"

    def opened(self, behaviour: str) -> None:
        with self.lock:
            self.requests[behaviour] += 1
            self.open_now[behaviour] += 1
            self.most_open[behaviour] = max(self.most_open[behaviour], self.open_now[behaviour])

    def closed(self, behaviour: str) -> None:
        with self.lock:
            self.open_now[behaviour] -= 1


def zoneless_http_date(at: datetime) -> str:
    """An HTTP date without its ``GMT``: what some servers send."""
    return at.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S")


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        behaviour = self._read_request()
        state = self.server.state
        state.opened(behaviour)
        try:
            self._misbehave(behaviour, state)
        except OSError:
            pass  # the notifier hung up on us: what it should do
        finally:
            state.closed(behaviour)

    def _read_request(self) -> str:
        request_line = self.rfile.readline(8192).decode("latin-1")
        length = 0
        while (line := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        parts = request_line.split()
        return parts[1].strip("/") if len(parts) > 1 else ""

    def _misbehave(self, behaviour: str, state: Hostile) -> None:
        out = self.wfile
        if behaviour == ZONELESS:
            soon = zoneless_http_date(datetime.now(UTC) + timedelta(seconds=2))
            out.write(
                f"HTTP/1.1 503 Busy\r\nRetry-After: {soon}\r\nContent-Length: 0\r\n\r\n".encode()
            )
        elif behaviour == NUL:
            out.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % len(NUL_BODY) + NUL_BODY)
        elif behaviour == HUGE:
            out.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % HUGE_BYTES)
            chunk = b"x" * 65536
            for _ in range(HUGE_BYTES // len(chunk)):
                out.write(chunk)
        elif behaviour == DRIP:
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"." * 1000000
            for byte in answer:
                out.write(bytes([byte]))
                if self._hung_up(1.0) or state.closing.is_set():
                    return
        else:  # SILENT, and anything unknown: wait for the notifier to give up
            while self.connection.recv(65536):
                pass
        out.flush()

    def _hung_up(self, wait_s: float) -> bool:
        """Whether the notifier closed the connection within ``wait_s`` (it sends no more)."""
        readable, _, _ = select.select([self.connection], [], [], wait_s)
        return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, state: Hostile) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state


@contextmanager
def hostile_endpoints(port: int) -> Iterator[Hostile]:
    state = Hostile(port)
    server = _Server(port, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.closing.set()
        server.shutdown()
        server.server_close()
