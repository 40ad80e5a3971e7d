"""The example checkout page in a real browser (Debian's headless Chromium) against real roles.

The page (``workers/api/static/checkout.html``) is served from an origin of its own, as a
merchant would host it: a tiny static server on another port, the API's URL in the page's
address. ``127.0.0.1:<port>`` and ``localhost:<port>`` are two origins of the same server, so
one is allowed and the other not. What the test reads is what the page shows and what it
recorded in ``window.checkout`` as its EventSource told it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from selenium import webdriver

from tests.helpers.api import CARD, Api, serving_api
from tests.helpers.browser import chromium
from tests.helpers.db import Conn
from tests.helpers.flow import Flow, flow, paused
from tests.helpers.servers import free_port, server_processes
from tests.helpers.waiting import wait_for
from workers.api.merchants import create_merchant, set_origins
from workers.core import local_http
from workers.core.config import Settings

# One server process: the API restarts in half the time.
ONE_SERVER = {"FLOWPAY_API__WORKERS": "1"}
STATIC = Path(__file__).resolve().parents[1] / "workers" / "api" / "static"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No request lines on the test's output."""


@contextlib.contextmanager
def page_server() -> Iterator[int]:
    """The page's folder over HTTP on a free port of this machine; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), partial(_Quiet, directory=STATIC))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def page_url(host: str, port: int, payment: dict[str, Any], api_url: str) -> str:
    fragment = urlencode(
        {"payment": payment["id"], "client_secret": payment["client_secret"], "api": api_url}
    )
    return f"http://{host}:{port}/checkout.html#{fragment}"


def seen(browser: webdriver.Chrome) -> dict[str, Any]:
    found: dict[str, Any] = browser.execute_script("return window.checkout")
    return found


def shown(browser: webdriver.Chrome) -> list[str]:
    """The statuses the page lists, as a customer sees them."""
    return list(
        browser.execute_script(
            "return [...document.querySelectorAll('#history li')].map(li => li.textContent)"
        )
    )


def restart_api(f: Flow) -> None:
    """Kill serve-api and its server processes outright (a crash), then start it anew on the
    same port; streams open on it drop."""
    old = f.processes["api"]
    children = server_processes(old.pid)
    old.kill()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    old.wait(30)
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 30, "the kill")
    port = f.api_url.rsplit(":", 1)[1]
    f.start("api", ["serve-api", "--port", port], f.api_url + "/healthz")


def test_the_page_follows_a_payment_through_an_api_restart_and_stops_at_204(
    settings: Settings, tmp_path: Path, db: Conn
) -> None:
    with (
        flow(settings, tmp_path, extra_env=ONE_SERVER) as f,
        page_server() as port,
        chromium() as browser,
    ):
        set_origins(db, f.merchant_id, [f"http://127.0.0.1:{port}"])
        with paused(f.processes["outbox"]):  # the payment waits at initiated meanwhile
            payment = f.pay()
            browser.get(page_url("127.0.0.1", port, payment, f.api_url))
            wait_for(lambda: shown(browser) == ["initiated"], 60, "the page to show the payment")
            restart_api(f)
            # The browser reconnects by itself to the new process, sending Last-Event-ID: 1.
            wait_for(lambda: seen(browser)["opened"] >= 2, 60, "the page to reconnect")
            assert shown(browser) == ["initiated"]
        wait_for(lambda: seen(browser)["state"] == "ended", 60, "the page to see the end")
        page = seen(browser)
        # Each change once, in order: resumed where it was, not started again.
        assert shown(browser) == ["initiated", "processing", "succeeded"]
        assert page["versions"] == [1, 2, 3]
        assert browser.find_element("id", "status").text == "succeeded"
        assert browser.find_element("id", "amount").text == "19.99 USD"
        # It ended on the API's 204 (its last reconnect, with Last-Event-ID: 3): the
        # EventSource is closed, which per the HTML standard means no reconnect ever again.
        assert browser.execute_script("return window.checkoutStream.readyState") == 2
        answer = local_http.client().get(
            f"{f.api_url}/v1/payments/{payment['id']}/events",
            params={"client_secret": payment["client_secret"]},
            headers={"Last-Event-ID": "3", "Origin": f"http://127.0.0.1:{port}"},
        )
        assert answer.status_code == 204
        assert payment["client_secret"] not in (tmp_path / "api.log").read_text()


def test_a_page_on_an_origin_not_allowed_is_refused(settings: Settings, db: Conn) -> None:
    merchant = create_merchant(db, "Shop")
    with serving_api(settings) as url, page_server() as port, chromium() as browser:
        set_origins(db, merchant.id, [f"http://127.0.0.1:{port}"])
        payment = Api(url, merchant.api_key, merchant.id, merchant.api_key).pay(CARD).json()

        browser.get(page_url("localhost", port, payment, url))  # another origin, not allowed
        wait_for(lambda: seen(browser)["state"] == "refused", 60, "the page to be refused")
        assert seen(browser)["statuses"] == []
        assert shown(browser) == []

        # The same page on the allowed origin follows the payment.
        browser.get(page_url("127.0.0.1", port, payment, url))
        wait_for(lambda: shown(browser) == ["initiated"], 60, "the allowed page to follow")
        assert seen(browser)["state"] == "open"
