"""The orchestrator end to end on the real stack: serve-api, the relay, run-orchestrator, the
processor executing its commands against the gateway simulator, and the ledger, as processes,
on Kafka and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import flowpay
from tests.helpers.flow import Flow, flow
from tests.helpers.kafka import committed_total
from tests.helpers.waiting import wait_for
from workers.core import commands, local_http
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.core.errors import FlowPayError
from workers.core.kafka import make_producer
from workers.core.topics import GROUP_PROCESSOR_COMMANDS, topics
from workers.orchestrator.inspect import saga_view


@dataclass
class Stack:
    flow: Flow

    @property
    def env(self) -> dict[str, str]:
        return self.flow.env

    def post(self, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.flow.api_key}",
            "Idempotency-Key": key or f"k-{time.monotonic_ns()}",
        }
        return local_http.client().post(
            self.flow.api_url + path, json=body, headers=headers, timeout=30
        )

    def payment(self, payment_id: str) -> dict[str, Any]:
        return self.flow.payment(payment_id)

    def reaches(self, payment_id: str, status: str) -> dict[str, Any]:
        wait_for(lambda: self.payment(payment_id)["status"] == status, what=f"{status}")
        return self.payment(payment_id)

    def saga(self, saga_id: str) -> dict[str, Any]:
        with psycopg.connect(admin_url(self.flow.settings), autocommit=True) as conn:
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

    def sim_stats(self) -> dict[str, Any]:
        return dict(local_http.client().get(self.flow.sim_url + "/_sim/stats").json())

    def sim_authorization(self, payment_id: str) -> dict[str, Any]:
        params = {"reference": payment_id}
        found = (
            local_http.client()
            .get(self.flow.sim_url + "/v1/authorizations", params=params)
            .json()["data"]
        )
        [authorization] = found
        return dict(authorization)

    def processor_amounts(self, payment_id: str) -> tuple[int, int | None]:
        """(amount, amount_received) as the processor records the payment."""
        with psycopg.connect(admin_url(self.flow.settings), autocommit=True) as conn:
            row = conn.execute(
                "SELECT amount, amount_received FROM processor.payments WHERE payment_id = %s",
                (payment_id,),
            ).fetchone()
        assert row is not None
        return int(row[0]), row[1]

    def ledger_check(self) -> None:
        def balanced() -> bool:
            checked = flowpay("ledger", "check", "--json", env=self.env)
            return checked.returncode == 0 and json.loads(checked.stdout)["ok"] is True

        wait_for(balanced, what="the ledger to balance")

    def redeliver_commands(self, payment_id: str) -> int:
        """Publish again every command issued for the payment, as they were; how many."""
        with psycopg.connect(admin_url(self.flow.settings), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT value FROM orchestrator.outbox WHERE message_key = %s ORDER BY id",
                (payment_id.encode(),),
            ).fetchall()
        producer = make_producer(self.flow.settings, "outbox")
        for (value,) in rows:
            encoded = commands.encode(commands.decode(bytes(value)))
            producer.produce(
                topics(self.flow.settings).commands,
                key=encoded.key,
                value=encoded.value,
                headers=encoded.headers,
            )
        assert producer.flush(30) == 0
        return len(rows)


@contextmanager
def stack(settings: Settings, tmp_path: Path, ttl_s: float = 3600.0) -> Iterator[Stack]:
    extra = {
        "FLOWPAY_ORCHESTRATOR__AUTHORIZATION_TTL_S": str(ttl_s),
        "FLOWPAY_ORCHESTRATOR__TIMER_INTERVAL_S": "0.2",
    }
    with flow(settings, tmp_path, extra_env=extra) as f:
        f.start("ledger", ["run-ledger"])
        yield Stack(f)


def test_a_manual_payment_is_authorized_at_the_gateway_then_partly_captured(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        payment_id = s.manual(1000)
        held = s.payment(payment_id)
        assert (held["capture_method"], held["amount_capturable"]) == ("manual", 1000)
        assert s.sim_authorization(payment_id)["status"] == "requires_capture"

        taken = s.post(f"/v1/payments/{payment_id}/capture", {"amount_to_capture": 600}, "cap-1")
        assert taken.status_code == 202, taken.text
        again = s.post(f"/v1/payments/{payment_id}/capture", {"amount_to_capture": 600}, "cap-1")
        assert again.headers.get("Idempotent-Replayed") == "true"
        done = s.reaches(payment_id, "succeeded")
        assert (done["amount_received"], done["amount_capturable"]) == (600, 0)
        at_gateway = s.sim_authorization(payment_id)
        assert (at_gateway["status"], at_gateway["amount_captured"]) == ("captured", 600)

        saga = s.saga(f"payment:{payment_id}")
        assert (saga["state"], saga["outcome"]) == ("done", "succeeded")
        assert [st["name"] for st in saga["steps"]] == ["authorize", "await_decision", "capture"]
        assert all(st["answer_type"] for st in saga["steps"])
        assert [t["status"] for t in saga["timers"]] == ["canceled", "canceled", "canceled"]
        # The processor keeps what the payment was made for beside what it received.
        assert s.processor_amounts(payment_id) == (1000, 600)
        s.ledger_check()
        # Refunds are bounded by what was received: all of it refunds the payment in full.
        above = s.post(f"/v1/payments/{payment_id}/refunds", {"amount": 601})
        assert above.status_code == 422, above.text
        refund = s.post(f"/v1/payments/{payment_id}/refunds", {"amount": 600})
        assert refund.status_code == 202, refund.text
        s.reaches(payment_id, "refunded")
        assert s.processor_amounts(payment_id) == (1000, 600)
        # A capture once the payment moved on is refused, naming its status.
        late = s.post(f"/v1/payments/{payment_id}/capture", {})
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "payment_invalid_state"
        assert "refunded" in late.json()["error"]["message"]


def test_a_redelivered_command_calls_the_gateway_for_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        payment_id = s.manual(1000)
        before = s.sim_stats()
        assert s.redeliver_commands(payment_id) == 1  # the authorize, again
        # Keyed by the payment: the capture is executed after the redelivered authorize.
        taken = s.post(f"/v1/payments/{payment_id}/capture", {})
        assert taken.status_code == 202, taken.text
        assert s.reaches(payment_id, "succeeded")["amount_received"] == 1000
        after = s.sim_stats()
        # One call since: the capture. The redelivered authorize made none.
        assert after["requests"] - before["requests"] == 1
        assert after["authorizations"] == before["authorizations"] == 1
        assert s.redeliver_commands(payment_id) == 2  # authorize and capture, again
        # On the topic: 2 issued, 1 + 2 redelivered; offsets commit after the effects.
        commands_topic = topics(settings).commands
        wait_for(
            lambda: committed_total(settings, GROUP_PROCESSOR_COMMANDS, commands_topic) == 5,
            what="the processor to take the redelivered commands",
        )
        assert s.sim_stats()["requests"] == after["requests"]
        assert s.payment(payment_id)["amount_received"] == 1000
        # Deduped by command id: no command was answered twice.
        answers = [e["type"] for e in s.flow.emitted(payment_id)]
        assert answers == ["payment.requires_capture", "payment.succeeded"]
        s.ledger_check()


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
        assert s.sim_authorization(payment_id)["status"] == "canceled"
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
        s.ledger_check()


def test_a_refused_capture_fails_the_payment_and_its_saga_ends(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        payment_id = s.manual()
        # The hold lapses at the gateway (released there, not by FlowPay): the capture is refused.
        held = s.sim_authorization(payment_id)["id"]
        lapsed = local_http.client().post(
            f"{s.flow.sim_url}/v1/authorizations/{held}/void",
            json={},
            headers={"Idempotency-Key": f"lapsed-{payment_id}"},
        )
        assert lapsed.status_code == 200, lapsed.text
        taken = s.post(f"/v1/payments/{payment_id}/capture", {})
        assert taken.status_code == 202, taken.text
        assert s.reaches(payment_id, "failed")["failure_reason"] == "gateway_error"
        saga_id = f"payment:{payment_id}"
        wait_for(lambda: s.ended(saga_id), what="the saga to end")
        saga = s.saga(saga_id)
        assert (saga["state"], saga["outcome"]) == ("failed", "failed")
        assert [st["name"] for st in saga["steps"]] == ["authorize", "await_decision", "capture"]
        # Nothing is left waiting: no void is sent that nothing would answer.
        assert all(t["status"] == "canceled" for t in saga["timers"])
        s.ledger_check()


def test_an_authorization_expires_even_across_an_orchestrator_restart(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path, ttl_s=3.0) as s:
        payment_id = s.manual()
        # The timer is a row: the orchestrator that armed it can go, another fires it.
        first = s.flow.processes["orchestrator"]
        first.terminate()
        first.wait(30)
        s.flow.start("orchestrator-2", ["run-orchestrator"])
        expired = s.reaches(payment_id, "canceled")
        assert expired["cancellation_reason"] == "expired"
        assert s.sim_authorization(payment_id)["status"] == "canceled"
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
        assert s.saga(f"payment:{payment_id}")["outcome"] == "succeeded"
        commands_sent = [st["command_type"] for st in s.saga(f"payment:{payment_id}")["steps"]]
        assert commands_sent == ["payment.charge"]
