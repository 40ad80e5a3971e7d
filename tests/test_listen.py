"""`flowpay listen`: the merchant's events, signed as the notifier signs webhooks, forwarded to a
local server that verifies them; one line per event with the answer; an unreachable target is a
line; a stream cut by a crash of the API resumes without losing or repeating an event; Ctrl-C
ends it cleanly.

Real roles: the API, relay, processor, orchestrator, gateway simulator; a real receiver.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowpay_cli.commands.listen import _report
from tests.conftest import env_for, flowpay
from tests.helpers.flow import Flow, flow
from tests.helpers.receiver import Receiver, receiver
from tests.helpers.servers import free_port, running
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.endpoint_events import new_webhook_secret
from workers.core.webhooks import webhook_body
from workers.notifier.posting import Result

pytestmark = pytest.mark.timeout(300)
FLOW_OF_SUCCESS = ["payment.initiated", "payment.processing", "payment.succeeded"]


def lines(log: Path) -> list[dict[str, Any]]:
    """The JSON lines `listen --json` printed so far."""
    text = log.read_text() if log.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@contextmanager
def listening(f: Flow, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    common = ["--api-key", f.api_key, "--url", f.api_url, "--json"]
    with running(["listen", *args, *common], f.env, None, log) as process:
        wait_for(lambda: lines(log), 120, "listen to say it is ready")
        yield process


def forwarded(hooks: Receiver, payment_id: str) -> list[str]:
    return [r.body["type"] for r in hooks.got if r.body["data"]["id"] == payment_id]


def test_listen_forwards_each_event_signed_and_resumes_after_a_crash(
    settings: Settings, tmp_path: Path
) -> None:
    secret = new_webhook_secret()
    log = tmp_path / "listen.out"
    with (
        flow(settings, tmp_path) as f,
        receiver(free_port()) as hooks,
        listening(
            f, log, "--forward-to", hooks.url, "--secret", secret, "--events", "payment.*"
        ) as listen,
    ):
        hooks.secret = secret
        assert lines(log)[0] == {"secret": secret, "forward_to": hooks.url}
        hooks.script = [500]  # the first event's answer: a line saying so, not a retry
        first = f.pay()["id"]
        wait_for(lambda: forwarded(hooks, first) == FLOW_OF_SUCCESS, what="its three webhooks")
        assert all(r.signature_ok for r in hooks.got)  # as the receiver verified them
        # The payment as GET shows it, but for its client secret (only its own reads show it).
        shown = {k: v for k, v in f.payment(first).items() if k != "client_secret"}
        assert hooks.got[-1].body["data"] == shown
        last = hooks.got[-1]
        # The body a webhook of the event would have (moments in whole seconds: the event's
        # `created`), with the Standard Webhooks headers.
        assert last.raw == webhook_body(
            "payment.succeeded", _moment(last.body["timestamp"]), last.body["data"]
        )
        assert last.webhook_id.startswith("msg_")
        wait_for(lambda: len(lines(log)) == 4, what="a line per event")
        reported = lines(log)[1:]
        assert [(r["type"], r["payment_id"], r["status"]) for r in reported] == [
            ("payment.initiated", first, 500),
            ("payment.processing", first, 200),
            ("payment.succeeded", first, 200),
        ]

        f.processes["api"].kill()  # the stream is cut
        f.processes["api"].wait(10)
        port = f.api_url.rsplit(":", 1)[1]
        f.start("api", ["serve-api", "--port", port], f.api_url + "/healthz")
        made: list[str] = []
        # The killed server's processes may still be letting go of the port.
        wait_for(lambda: _paid(f, made), 60, "a payment through the API restarted")
        second = made[0]
        wait_for(lambda: forwarded(hooks, second) == FLOW_OF_SUCCESS, what="after the crash")
        # Its line follows the answer: printed once the receiver has answered.
        wait_for(lambda: len(lines(log)) >= 7, what="a line per event after the crash")
        ids = [r["event_id"] for r in lines(log)[1:]]
        assert len(ids) == 6 == len(set(ids))  # none lost, none twice
        assert forwarded(hooks, first) == FLOW_OF_SUCCESS

        listen.send_signal(signal.SIGINT)
        assert listen.wait(30) == 0
    assert "Traceback" not in log.read_text()


def test_an_unreachable_target_is_a_line_and_listen_carries_on(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "listen.out"
    nowhere = f"http://127.0.0.1:{free_port()}/hook"
    with flow(settings, tmp_path) as f, listening(f, log, "--forward-to", nowhere) as listen:
        made = lines(log)[0]["secret"]
        assert made.startswith("whsec_")  # a new one, made for this run
        for _ in range(2):
            f.pay()
        wait_for(lambda: len(lines(log)) == 7, 120, "a line per event of both payments")
        for line in lines(log)[1:]:
            assert line["status"] is None
            assert "Connect" in line["error"]
        assert listen.poll() is None
        wrong_key = ["--api-key", "sk_live_wrong", "--url", f.api_url]
        refused = flowpay("listen", "--forward-to", nowhere, *wrong_key, env=f.env)
        assert refused.returncode == 2
        assert "api_key_invalid" in refused.stderr
    assert made not in log.read_text().split("\n", 1)[1]  # shown once, at start


def test_listen_refuses_bad_options_in_one_line(settings: Settings) -> None:
    env = env_for(settings)
    for args, says in [
        (["--forward-to", "localhost:3000"], "must be an http(s) URL"),
        (["--forward-to", "http://localhost:3000", "--secret", "nope"], "whsec_"),
        (["--forward-to", "http://localhost:3000", "--events", "Payment%"], "not an event type"),
    ]:
        done = flowpay("listen", *args, "--api-key", "sk_live_x", env=env)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr
        assert len(done.stderr.strip().splitlines()) <= 2, done.stderr


def _paid(f: Flow, made: list[str]) -> bool:
    try:
        made.append(f.pay()["id"])
    except httpx.TransportError:
        return False
    return True


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_line_per_event_for_people_names_the_event_and_the_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = {
        "id": "evt_" + "0" * 32,
        "type": "payment.succeeded",
        "data": {"object": {"id": "pay_1"}},
    }
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    _report(event, Result(200, None, None, at, 12, ""), as_json=False)
    _report(event, Result(None, "ConnectError: refused", None, at, 3, None), as_json=False)
    first, second = capsys.readouterr().out.splitlines()
    assert first == f"03:04:05  --> payment.succeeded {event['id']} (pay_1)  <-- [HTTP 200]"
    assert second.endswith("<-- [!ConnectError: refused]")
