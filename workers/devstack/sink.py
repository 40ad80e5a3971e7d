"""The local stack's webhook receiver: what a merchant's server would be, for the demo.

It verifies each delivery's signature with the demo merchant's secret and appends what it got
to ``<dev.home>/webhook-sink.jsonl``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from workers.core.config import Settings
from workers.core.webhooks import InvalidSignature, verify
from workers.devstack.paths import StackPaths


def sink_file(settings: Settings) -> Path:
    return StackPaths.of(settings).home / "webhook-sink.jsonl"


def sink_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.dev.sink_port}/webhooks"


def serve(settings: Settings, secret_of: Any, stop: threading.Event) -> None:
    """Receive webhooks until ``stop``; ``secret_of()`` gives the secret to verify with."""
    out = sink_file(settings)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                payload, verified = verify(body, dict(self.headers.items()), secret_of()), True
            except (InvalidSignature, ValueError):
                payload, verified = body.decode("utf-8", "replace"), False
            record = {
                "received_at": time.time(),
                "webhook_id": self.headers.get("webhook-id"),
                "verified": verified,
                "body": payload,
            }
            with lock, out.open("a") as sink:
                sink.write(json.dumps(record) + "\n")
            self.send_response(200 if verified else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", settings.dev.sink_port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()


def received(settings: Settings) -> list[dict[str, Any]]:
    try:
        lines = sink_file(settings).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 refuses connections in a burst of webhooks, which the
    # notifier then retries minutes later.
    request_queue_size = 128
