"""Webhooks never reach inside the network: refused at registration and on every attempt.

With the URL rules on (the defaults), against the real CLI, a real ``flowpay run-notifier``,
Kafka and PostgreSQL. Endpoints stored while the rules were off stand for a name whose DNS
answer changed after registration: each attempt must check the address it connects to.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import env_for, flowpay, override
from tests.helpers.db import Conn
from tests.helpers.receiver import Receiver, receiver
from tests.helpers.servers import free_port, running
from tests.helpers.shop import FAST, Shop
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.events import EventType
from workers.core.sealing import keyring
from workers.notifier.endpoints import register_endpoint

RULES_ON = {"allow_insecure_http": False, "allow_private_targets": False}


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver(free_port()) as r:
        yield r


def test_registration_refuses_private_targets_and_http(settings: Settings, db: Conn) -> None:
    env = env_for(override(settings, "notifier", **RULES_ON))
    merchant = Shop(settings, db, "https://93.184.216.34/hook").merchant_id
    for url, rule in [
        ("https://localhost:8443/hook", "localhost (127.0.0.1) is loopback"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("https://[::ffff:10.1.2.3]/hook", "private (RFC 1918), as the IPv6 form"),
        ("http://93.184.216.34/hook", "webhook URL must be https"),
    ]:
        done = flowpay("webhooks", "add-endpoint", "--merchant", merchant, "--url", url, env=env)
        assert done.returncode == 2, (url, done.stdout, done.stderr)
        assert rule in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    refused = flowpay(
        "merchants", "create", "--name", "Nosy", "--webhook-url", "https://10.0.0.1/", env=env
    )
    assert refused.returncode == 2
    assert "private (RFC 1918)" in refused.stderr
    assert db.execute("SELECT count(*) FROM notifier.endpoints").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM api.merchants WHERE name = 'Nosy'").fetchone() == (0,)


def test_every_attempt_checks_the_address_it_connects_to(
    settings: Settings, db: Conn, hook: Receiver
) -> None:
    port = hook.url.split(":")[2].split("/")[0]
    refused = {
        f"https://localhost:{port}/hooks": "is loopback",  # whichever address it resolves to
        f"https://127.0.0.1:{port}/hooks": "127.0.0.1 is loopback",
        f"https://[::ffff:127.0.0.1]:{port}/hooks": "loopback, as the IPv6 form",
        f"https://2130706433:{port}/hooks": "2130706433 (127.0.0.1) is loopback",
        f"https://[::1]:{port}/hooks": "::1 is loopback",
        "https://169.254.169.254/latest/meta-data/": "169.254.169.254 is link-local",
        "https://10.20.30.40/hooks": "10.20.30.40 is private (RFC 1918)",
        "https://100.64.0.1/hooks": "100.64.0.1 is CGNAT (RFC 6598)",
        hook.url: "webhook URL must be https",  # http, to 127.0.0.1
    }
    shop = Shop(settings, db, next(iter(refused)))  # registered while the rules were off
    for url in list(refused)[1:]:
        register_endpoint(db, shop.merchant_id, url, settings.notifier, keyring(settings))
    env = {**env_for(override(settings, "notifier", **RULES_ON)), **FAST}
    with running(["run-notifier"], env):
        shop.publish("pay_S", EventType.INITIATED, EventType.SUCCEEDED)
        wait_for(lambda: _attempted(db) == len(refused), 60, "an attempt at each endpoint")
    errors: dict[str, str] = dict(
        db.execute(
            "SELECT e.url, a.error FROM notifier.attempts a"
            " JOIN notifier.deliveries d ON d.id = a.delivery_id"
            " JOIN notifier.endpoints e ON e.id = d.endpoint_id WHERE a.attempt = 1"
        ).fetchall()
    )
    assert set(errors) == set(refused)
    for url, rule in refused.items():
        assert rule in errors[url], (url, errors[url])
    assert hook.got == []  # nothing reached the receiver on 127.0.0.1


def test_redirects_are_not_followed(settings: Settings, db: Conn, hook: Receiver) -> None:
    with receiver(free_port()) as inside:
        hook.script = [(307, {"Location": inside.url}), (302, {"Location": inside.url})]
        shop = Shop(settings, db, hook.url)
        hook.secret = shop.endpoint.secret
        with running(["run-notifier"], {**env_for(settings), **FAST}):
            shop.publish("pay_R", EventType.INITIATED, EventType.SUCCEEDED)
            delivered = shop.wait_status("delivered")
        assert [a["status_code"] for a in shop.attempts(delivered["id"])] == [307, 302, 200]
        assert inside.got == []


def test_tls_names_the_endpoints_host_while_connecting_to_its_checked_address(
    settings: Settings, db: Conn, tmp_path: Path
) -> None:
    cert = _self_signed_for_localhost(tmp_path)
    https_only = override(settings, "notifier", allow_insecure_http=False)
    with _tls_receiver(cert, tmp_path) as seen:
        shop = Shop(https_only, db, f"https://localhost:{seen['port']}/hooks")
        env = {**env_for(https_only), **FAST, "SSL_CERT_FILE": str(cert)}
        with running(["run-notifier"], env):
            shop.publish("pay_T", EventType.INITIATED, EventType.SUCCEEDED)
            shop.wait_status("delivered")
    # Verified against the name, sent with it: not with the address connected to.
    assert seen["sni"] == "localhost"
    assert seen["host"] == f"localhost:{seen['port']}"


def _attempted(db: Conn) -> int:
    row = db.execute("SELECT count(DISTINCT delivery_id) FROM notifier.attempts").fetchone()
    return int(row[0]) if row else 0


def _self_signed_for_localhost(tmp_path: Path) -> Path:
    cert = tmp_path / "localhost.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(tmp_path / "localhost.key"), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert


@contextmanager
def _tls_receiver(cert: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    seen: dict[str, Any] = {"port": free_port()}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, tmp_path / "localhost.key")
    context.sni_callback = lambda sock, name, ctx: seen.update(sni=name)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen["host"] = self.headers.get("Host")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", seen["port"]), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
