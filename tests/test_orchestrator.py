"""The orchestrator end to end on the real stack: serve-api, the relay and run-orchestrator as
processes, Kafka and PostgreSQL, and a test executor (``tests.helpers.executor``) that plays
the service executing commands with real Kafka clients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import env_for, flowpay
from tests.helpers.executor import Executor
from tests.helpers.servers import free_port, running
from tests.helpers.waiting import wait_for
from workers.api.merchants import create_merchant
from workers.core.commands import Capture, CommandType, Void
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.core.errors import FlowPayError
from workers.core.status import CancellationReason
from workers.orchestrator.inspect import saga_view


@dataclass
class Stack:
    settings: Settings
    url: str
    key: str
    executor: Executor
    env: dict[str, str]
    logs: Path
    orchestrator: ExitStack

    def post(self, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.key}",
            "Idempotency-Key": key or f"k-{time.monotonic_ns()}",
        }
        return httpx.post(self.url + path, json=body, headers=headers, timeout=30)

    def payment(self, payment_id: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        return dict(httpx.get(f"{self.url}/v1/payments/{payment_id}", headers=headers).json())

    def reaches(self, payment_id: str, status: str) -> dict[str, Any]:
        wait_for(lambda: self.payment(payment_id)["status"] == status, what=f"{status}")
        return self.payment(payment_id)

    def saga(self, saga_id: str) -> dict[str, Any]:
        with psycopg.connect(admin_url(self.settings), autocommit=True) as conn:
            return saga_view(conn, saga_id)

    def ended(self, saga_id: str) -> bool:
        """Whether the saga exists and has ended (done or failed)."""
        try:
            return self.saga(saga_id)["state"] in ("done", "failed")
        except FlowPayError:
            return False

    def manual(self, amount: int = 1000) -> str:
        body = {"amount": amount, "currency": "EUR", "payment_method": "pm_card_visa",
                "capture_method": "manual"}  # fmt: skip
        created = self.post("/v1/payments", body)
        assert created.status_code == 202, created.text
        payment_id: str = created.json()["id"]
        self.reaches(payment_id, "requires_capture")
        return payment_id

    def start_orchestrator(self) -> None:
        log = self.logs / "orchestrator.log"
        self.orchestrator.enter_context(running(["run-orchestrator"], self.env, None, log))


@contextmanager
def stack(settings: Settings, tmp_path: Path, ttl_s: float = 3600.0) -> Iterator[Stack]:
    with psycopg.connect(admin_url(settings), autocommit=True) as conn:
        merchant = create_merchant(conn, "Saga merchant")
    port = free_port()
    env = {
        **env_for(settings),
        "FLOWPAY_WORKER__POLL_TIMEOUT_S": "0.1",
        "FLOWPAY_ORCHESTRATOR__AUTHORIZATION_TTL_S": str(ttl_s),
        "FLOWPAY_ORCHESTRATOR__TIMER_INTERVAL_S": "0.2",
    }
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as roles, Executor(settings).running() as executor:
        roles.enter_context(
            running(
                ["serve-api", "--port", str(port), "--workers", "1"],
                env,
                url + "/healthz",
                tmp_path / "api.log",
            )
        )
        roles.enter_context(running(["run-outbox"], env, None, tmp_path / "outbox.log"))
        orchestrator = roles.enter_context(ExitStack())
        result = Stack(settings, url, merchant.api_key, executor, env, tmp_path, orchestrator)
        result.start_orchestrator()
        yield result


def test_a_manual_payment_is_authorized_then_partly_captured(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        payment_id = s.manual(1000)
        held = s.payment(payment_id)
        assert (held["capture_method"], held["amount_capturable"]) == ("manual", 1000)
        [authorize] = s.executor.of(payment_id)
        assert authorize.type is CommandType.AUTHORIZE
        assert authorize.saga_id == f"payment:{payment_id}"

        taken = s.post(f"/v1/payments/{payment_id}/capture", {"amount_to_capture": 600}, "cap-1")
        assert taken.status_code == 202, taken.text
        again = s.post(f"/v1/payments/{payment_id}/capture", {"amount_to_capture": 600}, "cap-1")
        assert again.headers.get("Idempotent-Replayed") == "true"
        done = s.reaches(payment_id, "succeeded")
        assert (done["amount_received"], done["amount_capturable"]) == (600, 0)
        [capture] = s.executor.of(payment_id, CommandType.CAPTURE)
        assert capture.data == Capture(amount_to_capture=600)

        saga = s.saga(f"payment:{payment_id}")
        assert (saga["state"], saga["outcome"]) == ("done", "succeeded")
        assert [st["name"] for st in saga["steps"]] == ["authorize", "await_decision", "capture"]
        assert all(st["answer_type"] for st in saga["steps"])
        assert [t["status"] for t in saga["timers"]] == ["canceled", "canceled", "canceled"]
        # A capture once the payment moved on is refused, naming its status.
        late = s.post(f"/v1/payments/{payment_id}/capture", {})
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "payment_invalid_state"
        assert "succeeded" in late.json()["error"]["message"]


def test_a_cancel_voids_the_authorization_and_operators_see_the_saga(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        payment_id = s.manual()
        canceled = flowpay("cancel", payment_id, "--reason", "duplicate", "--json", env=s.env)
        assert canceled.returncode == 0, canceled.stderr
        assert json.loads(canceled.stdout)["status"] == "processing"
        done = s.reaches(payment_id, "canceled")
        assert done["cancellation_reason"] == "duplicate"
        [void] = s.executor.of(payment_id, CommandType.VOID)
        assert void.data == Void(cancellation_reason=CancellationReason.DUPLICATE)
        saga_id = f"payment:{payment_id}"
        wait_for(lambda: s.ended(saga_id), what="the saga to end")

        shown = json.loads(flowpay("sagas", "show", saga_id, "--json", env=s.env).stdout)
        assert shown["outcome"] == "canceled"
        assert [(st["name"], st["command_type"]) for st in shown["steps"]] == [
            ("authorize", "payment.authorize"),
            ("await_decision", None),
            ("cancel", "payment.void"),
        ]
        listed = flowpay(
            "sagas", "list", "--state", "done", "--type", "payment", "--json", env=s.env
        )
        assert [row["id"] for row in json.loads(listed.stdout)] == [saga_id]
        status = json.loads(flowpay("status", payment_id, "--json", env=s.env).stdout)
        assert [saga["id"] for saga in status["sagas"]] == [saga_id]
        again = flowpay("capture", payment_id, env=s.env)
        assert again.returncode != 0
        assert "payment_invalid_state" in again.stderr


def test_an_authorization_expires_even_across_an_orchestrator_restart(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path, ttl_s=3.0) as s:
        payment_id = s.manual()
        # The timer is a row: the orchestrator that armed it can go, another fires it.
        s.orchestrator.close()
        s.start_orchestrator()
        expired = s.reaches(payment_id, "canceled")
        assert expired["cancellation_reason"] == "expired"
        [void] = s.executor.of(payment_id, CommandType.VOID)
        assert void.data == Void(cancellation_reason=CancellationReason.EXPIRED)
        saga = s.saga(f"payment:{payment_id}")
        assert (saga["state"], saga["outcome"]) == ("failed", "canceled")
        assert saga["steps"][-1]["compensation"]


def test_an_automatic_payment_and_its_refund_are_sagas(settings: Settings, tmp_path: Path) -> None:
    with stack(settings, tmp_path) as s:
        body = {"amount": 500, "currency": "EUR", "payment_method": "pm_card_visa"}
        payment_id = s.post("/v1/payments", body).json()["id"]
        s.reaches(payment_id, "succeeded")
        refund = s.post(f"/v1/payments/{payment_id}/refunds", {"amount": 200})
        assert refund.status_code == 202, refund.text
        refund_id = refund.json()["id"]
        wait_for(lambda: s.ended(f"refund:{refund_id}"), what="the refund saga")
        assert s.saga(f"refund:{refund_id}")["outcome"] == "refunded"
        assert [c.type for c in s.executor.of(payment_id)] == [
            CommandType.CHARGE,
            CommandType.REFUND,
        ]
        assert s.saga(f"payment:{payment_id}")["outcome"] == "succeeded"
