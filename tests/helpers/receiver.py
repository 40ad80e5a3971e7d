"""A real webhook receiver on 127.0.0.1: verifies every signature and records what it got.

``script`` decides each answer in turn: an int status, ``"hang"`` (no answer for a while), or
``(status, {"Retry-After": "1"})``; when it runs out, the receiver answers 200.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from chaos.receiver import serving
from workers.core.webhooks import InvalidSignature, verify

Answer = int | str | tuple[int, dict[str, str]]


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]
    signature_ok: bool
    answer: Answer
    at: float = field(default_factory=time.time)  # when it arrived (epoch seconds)
    raw: bytes = b""  # the body as sent, and its headers: to verify against other secrets
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    url: str
    secret: str = ""
    script: list[Answer] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    hang_s: float = 5.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self) -> Answer:
        with self.lock:
            return self.script.pop(0) if self.script else 200

    def delivered(self) -> list[Received]:
        return [r for r in self.got if r.answer == 200]

    def wait_for(self, count: int, timeout_s: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.got) < count:
            assert time.monotonic() < deadline, f"got {len(self.got)} of {count} webhooks"
            time.sleep(0.05)
        return list(self.got)


@contextmanager
def receiver(port: int) -> Iterator[Receiver]:
    state = Receiver(f"http://127.0.0.1:{port}/hooks")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                verify(body, dict(self.headers.items()), state.secret)
                ok = True
            except InvalidSignature:
                ok = False
            answer = state.next_answer()
            state.got.append(
                Received(
                    self.headers.get("webhook-id", ""),
                    json.loads(body),
                    ok,
                    answer,
                    raw=body,
                    headers=dict(self.headers.items()),
                )
            )
            if answer == "hang":
                time.sleep(state.hang_s)
                return
            status, headers = answer if isinstance(answer, tuple) else (int(answer), {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args: Any) -> None:
            pass

    with serving(port, Handler):
        yield state
