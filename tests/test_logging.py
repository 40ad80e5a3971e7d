"""Structured logs: one correlation id on a payment's lines in every role; JSON or text; no secrets."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request, Response
from fastapi.testclient import TestClient

from tests.conftest import env_for
from tests.helpers.flow import flow
from tests.helpers.receiver import receiver
from tests.helpers.servers import free_port, running
from workers.api.app import create_app
from workers.core import correlation, local_http, observe
from workers.core.config import Settings
from workers.core.events import EventType, Initiated, encode, new_event
from workers.core.logs import LogFormat, redact, setup_logging
from workers.devstack.roles import role_env

ROLES_ON_THE_PATH = ("api", "outbox", "processor", "ledger", "notifier")
# DEBUG: the consumer engine logs a batch at INFO and each of its events (with its ids) at DEBUG.
TRACED = {
    "FLOWPAY_NOTIFIER__POLL_INTERVAL_S": "0.1",
    "FLOWPAY_LOG_FORMAT": "json",
    "FLOWPAY_LOG_LEVEL": "DEBUG",
}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """setup_logging replaces the root logger's handlers; give pytest its own back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_one_line(fmt: LogFormat, stream: io.StringIO) -> str:
    setup_logging("INFO", "tester", fmt, stream=stream)
    with correlation.bound(payment_id="pay_1", correlation_id="req-1"):
        logging.getLogger("t").info("hello %s", "there", extra={"event_id": "ev-1"})
    return stream.getvalue().strip()


def test_json_lines_carry_the_bound_ids_and_the_ones_passed_to_the_call() -> None:
    line = json.loads(_log_one_line("json", io.StringIO()))
    assert line["message"] == "hello there"
    assert (line["role"], line["level"], line["logger"]) == ("tester", "INFO", "t")
    assert (line["payment_id"], line["correlation_id"], line["event_id"]) == (
        "pay_1",
        "req-1",
        "ev-1",
    )


def test_text_lines_are_for_people_and_still_carry_the_ids() -> None:
    line = _log_one_line("text", io.StringIO())
    assert " INFO tester t: hello there [" in line
    assert "payment_id=pay_1" in line
    assert "correlation_id=req-1" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert _log_one_line("auto", Terminal()).endswith("event_id=ev-1]")
    assert json.loads(_log_one_line("auto", io.StringIO()))["event_id"] == "ev-1"


def test_ids_bound_in_a_block_are_gone_after_it() -> None:
    with correlation.bound(payment_id="pay_1"):
        with correlation.bound(event_id="ev-1", correlation_id=None):
            assert correlation.current() == {"payment_id": "pay_1", "event_id": "ev-1"}
        assert correlation.current() == {"payment_id": "pay_1"}
    assert correlation.current() == {}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("auth failed for Authorization: Bearer sk_live_abc-DEF_123", "abc-DEF_123"),
        ("key sk_live_Zz9_-x in a message", "Zz9_-x"),
        ("endpoint secret whsec_c2VjcmV0K2J5dGVz/9= leaked", "c2VjcmV0K2J5dGVz/9="),
        ("cannot connect to postgresql://flowpay:hunter2@db:5432/flowpay", "hunter2"),
        ("conninfo host=db password=hunter2 dbname=x", "hunter2"),
        ("conninfo host=db password='hunter 2 \\' x' dbname=x", "hunter 2"),
        ("conninfo host=db password='hunter 2 \\' x' dbname=x", "' x'"),
        ("POSTGRESQL://flowpay:hunter2@db:5432/flowpay", "hunter2"),
        ("Postgres://flowpay:hunter2@db/flowpay", "hunter2"),
        ("postgresql://flowpay:hunt@er2@db/flowpay (an @ left unencoded)", "er2"),
        ("postgresql://db/flowpay?user=flowpay&password=hunter2&sslmode=off", "hunter2"),
        ("PGPASSWORD=hunter2 psql", "hunter2"),
        ('settings {"password": "hunter2", "user": "flowpay"}', "hunter2"),
        ('settings {"db_password":"hunter \\"2\\""}', "hunter"),
        ("settings {'password': 'hunter2'}", "hunter2"),
        ("Authorization: Basic Zmxvd3BheTpodW50ZXIy", "Zmxvd3BheTpodW50ZXIy"),
        ("headers [('authorization', 'basic Zmxvd3BheTpodW50ZXIy')]", "Zmxvd3BheTpodW50ZXIy"),
    ],
)
def test_secrets_are_masked_in_every_line(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "[redacted]" in redact(text)
    stream = io.StringIO()
    setup_logging("INFO", "tester", "json", stream=stream)
    try:
        raise RuntimeError(text)
    except RuntimeError:
        logging.getLogger("t").exception("failed: %s", text)
    assert secret not in stream.getvalue()
    assert "[redacted]" in json.loads(stream.getvalue())["message"]


@pytest.mark.parametrize(
    "text",
    [
        "a basic check of the configuration passed",  # not Basic credentials: no user:password
        "password rotation is due",
        "GET https://example.com/v1/payments?limit=10",
    ],
)
def test_text_without_secrets_is_left_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_fields_added_to_every_line_are_masked_and_bounded(fmt: LogFormat) -> None:
    stream = io.StringIO()
    setup_logging("INFO", "tester", fmt, stream=stream)
    # Ids come from callers (X-Request-Id) and from Kafka headers: outside bytes, like a message.
    with correlation.bound(correlation_id="Bearer sk_live_abcdefSECRET", payment_id="p" * 201):
        logging.getLogger("t").info("hello", extra={"event_id": 'ev\n{"forged": 1}'})
    written = stream.getvalue()
    assert "abcdefSECRET" not in written
    assert "p" * 201 not in written
    assert "forged" not in written
    assert len(written.strip().splitlines()) == 1
    if fmt == "json":
        line = json.loads(written)
        assert line["correlation_id"] == "Bearer [redacted]"
        assert line["payment_id"] == line["event_id"] == "[invalid]"


def test_the_relay_logs_a_batch_in_one_line_and_its_events_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = [
        new_event(
            EventType.INITIATED,
            payment_id=f"pay_{n}",
            merchant_id="mer_1",
            data=Initiated(amount=100, currency="USD", payment_method="pm_card_visa"),
            source="test",
        )
        for n in range(3)
    ]
    batch = [encode(event).headers for event in events]
    caplog.set_level(logging.INFO, logger="flowpay.events")
    observe.published("outbox", "api.outbox", batch, time.time_ns())
    [line] = caplog.records
    assert line.getMessage().startswith("outbox published 3 events from api.outbox, ")
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="flowpay.events")
    observe.published("outbox", "api.outbox", batch, time.time_ns())
    _, *per_event = caplog.records
    assert [(r.levelno, getattr(r, "payment_id", None)) for r in per_event] == [
        (logging.DEBUG, "pay_0"),
        (logging.DEBUG, "pay_1"),
        (logging.DEBUG, "pay_2"),
    ]


def test_http_clients_request_lines_are_off_at_info() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "tester", "json", stream=stream)
    with receiver(free_port()) as hook:
        assert local_http.client().post(hook.url, content=b"{}").status_code == 200
    assert hook.url not in stream.getvalue()
    assert "HTTP Request" not in stream.getvalue()


def test_flowpay_dev_runs_roles_with_json_logs_unless_configured() -> None:
    assert role_env(Settings())["FLOWPAY_LOG_FORMAT"] == "json"
    assert role_env(Settings(log_format="text"))["FLOWPAY_LOG_FORMAT"] == "text"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_format_option_sets_a_role_s_format(
    settings: Settings, tmp_path: Path, fmt: str
) -> None:
    port = free_port()
    log = tmp_path / "sim.log"
    args = ["serve-gateway-sim", "--port", str(port), "--db", str(tmp_path / "s.db")]
    env = {**env_for(settings), "FLOWPAY_LOG_FORMAT": "text" if fmt == "json" else "json"}
    with running([*args, "--log-format", fmt], env, f"http://127.0.0.1:{port}/healthz", log):
        pass
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert any("Uvicorn running" in line or "Started server" in line for line in lines), lines
    parsed = [_json_or_none(line) for line in lines]
    if fmt == "json":
        assert all(p is not None and p["role"] == "gateway-sim" for p in parsed), lines
    else:
        assert all(p is None for p in parsed), lines


def test_one_payment_s_lines_carry_one_correlation_id_in_every_role(
    settings: Settings, tmp_path: Path
) -> None:
    request_id = f"req-{uuid.uuid4()}"
    with (
        receiver(free_port()) as hook,
        flow(settings, tmp_path, extra_env=TRACED) as f,
    ):
        hook.secret = f.start_downstream(hook.url)
        response = f.create_payment(headers={"X-Request-Id": request_id})
        assert response.status_code == 202, response.text
        assert response.headers["x-request-id"] == request_id
        payment_id = response.json()["id"]
        f.wait_for(payment_id, lambda p: p["status"] == "succeeded")
        hook.wait_for(1)
        lines = _wait_for_lines(tmp_path, request_id)
        assert all(e["correlation_id"] == request_id for e in f.emitted(payment_id))
        api_key, webhook_secret = f.api_key, hook.secret

    for role in ROLES_ON_THE_PATH:
        assert lines[role], f"no {role} line carries {request_id}"
        assert all(line["payment_id"] == payment_id for line in lines[role]), lines[role]
    assert {"payment.initiated", "payment.succeeded"} <= {
        line.get("event_type") for line in lines["ledger"]
    }
    assert any("webhook attempt 1 done" in line["message"] for line in lines["notifier"])
    for path in tmp_path.glob("*.log"):
        text = path.read_text()
        assert api_key not in text, path.name
        assert webhook_secret not in text, path.name


def test_a_request_without_an_id_gets_one_and_errors_echo_it_too(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as f:
        made = f.create_payment().headers["x-request-id"]
        assert uuid.UUID(made)
        refused = local_http.client().get(
            f.api_url + "/v1/payments/pay_x", headers={"X-Request-Id": "r-404"}
        )
        assert refused.status_code == 401
        assert refused.headers["x-request-id"] == "r-404"
        unusable = "x" * 500
        replaced = f.create_payment(headers={"X-Request-Id": unusable})
        assert replaced.status_code == 202
        assert uuid.UUID(replaced.headers["x-request-id"])


def _wait_for_lines(log_dir: Path, request_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each role's JSON lines that carry ``request_id``, once the webhook's attempt and the
    ledger's success are logged (the notifier and the ledger take the event independently)."""
    deadline = time.monotonic() + 30
    while True:
        found = {
            role: _lines_with(log_dir / f"{role}.log", request_id) for role in ROLES_ON_THE_PATH
        }
        attempted = any("webhook attempt" in line["message"] for line in found["notifier"])
        posted = any(line.get("event_type") == "payment.succeeded" for line in found["ledger"])
        if attempted and posted:
            return found
        assert time.monotonic() < deadline, (
            f"not all logged: {found['notifier']}, {found['ledger']}"
        )
        time.sleep(0.2)


def _lines_with(path: Path, request_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    parsed = (_json_or_none(line) for line in path.read_text().splitlines() if request_id in line)
    return [p for p in parsed if p is not None and p.get("correlation_id") == request_id]


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def test_an_unexpected_error_is_a_500_envelope_with_the_request_id(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug, not a refusal")

    app.router.add_api_route("/broken", broken, methods=["GET"])
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/broken", headers={"X-Request-Id": "r-500"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "r-500"
    assert answer.json() == {
        "error": {
            "type": "api_error",
            "code": "internal_error",
            "message": "Something went wrong on our side",
        }
    }
    [logged] = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    assert logged.exc_info is not None
    assert "a bug, not a refusal" in str(logged.exc_info[1])
