"""Payouts end to end on the real stack: the API's intake reserving against the balance, the
orchestrator's payout saga, the processor paying out through the gateway simulator, the ledger's
postings and the API's read model. Some tests publish payout.requested themselves, to see the
saga and the ledger apart from the intake."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import flowpay
from tests.helpers.flow import Flow, flow
from tests.helpers.kafka import committed_total
from tests.helpers.receiver import receiver
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for
from tests.test_ledger_support import publish
from tests.test_orchestrator import Stack
from workers.core import local_http
from workers.core.config import ProcessorSettings, Settings
from workers.core.db import admin_url
from workers.core.events import EventType, GatewayReported, PayoutRequested, new_event
from workers.core.topics import GROUP_PROCESSOR_COMMANDS, topics
from workers.processor.gateway import Rejected, Unknown
from workers.processor.operations import PayoutFailed as PayoutFailedAt
from workers.processor.operations import PayoutOutcome, PayoutSent
from workers.processor.payouts import next_look_up_s, outcome_row, reported_row
from workers.processor.store import PayoutOutcomeRow, PayoutRecord


@contextmanager
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with flow(settings, tmp_path) as f:
        f.start("ledger", ["run-ledger"])
        yield Stack(f)


def request_payout(f: Flow, amount: int, destination: str | None = None) -> str:
    payout_id = f"po_{uuid.uuid4().hex[:16]}"
    data = PayoutRequested(amount=amount, currency="EUR", destination=destination)
    event = new_event(EventType.PAYOUT_REQUESTED, payment_id=payout_id, merchant_id=f.merchant_id,
                      data=data, source="test")  # fmt: skip
    publish(f.settings, [event])
    return payout_id


def ended(s: Stack, payout_id: str) -> dict[str, Any]:
    wait_for(lambda: s.ended(f"payout:{payout_id}"), what=f"payout {payout_id}'s saga to end")
    return s.saga(f"payout:{payout_id}")


def sim_payouts(s: Stack, payout_id: str) -> list[dict[str, Any]]:
    found = (
        local_http.client()
        .get(f"{s.flow.sim_url}/v1/payouts", params={"reference": payout_id})
        .json()
    )
    return list(found["data"])


def processor_payout(s: Stack, payout_id: str) -> tuple[str, str | None]:
    with psycopg.connect(admin_url(s.flow.settings), autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, failure FROM processor.payouts WHERE payout_id = %s", (payout_id,)
        ).fetchone()
    assert row is not None
    return str(row[0]), row[1]


def ledger_balances(s: Stack) -> dict[str, tuple[int, int]]:
    return ledger_balances_in(s, "EUR")


def ledger_balances_in(s: Stack, currency: str) -> dict[str, tuple[int, int]]:
    """(pending, posted) of each account in ``currency``, on its normal side."""
    shown = flowpay("ledger", "balances", "--currency", currency, "--json", env=s.env)
    assert shown.returncode == 0, shown.stderr
    return {b["account"]: (b["pending"], b["posted"]) for b in json.loads(shown.stdout)}


def test_a_payout_is_paid_once_through_the_gateway_and_posted(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        payout_id = request_payout(s.flow, 700)
        saga = ended(s, payout_id)
        assert (saga["state"], saga["outcome"]) == ("done", "paid")
        assert [(st["name"], st["command_type"]) for st in saga["steps"]] == [
            ("send", "payout.send")
        ]
        [paid] = sim_payouts(s, payout_id)
        assert (paid["status"], paid["amount"], paid["currency"]) == ("paid", 700, "EUR")
        assert processor_payout(s, payout_id) == ("paid", None)
        assert [e["type"] for e in s.flow.emitted(payout_id)] == ["payout.paid"]
        # Redelivered, the command calls the gateway for nothing and answers nothing again.
        assert s.redeliver_commands(payout_id) == 1
        wait_for(lambda: _commands_done(s, 2), what="the redelivered command to be taken")
        assert s.sim_stats()["payouts"] == 1
        assert [e["type"] for e in s.flow.emitted(payout_id)] == ["payout.paid"]
        s.ledger_check()
        balances = ledger_balances(s)
        assert balances["payouts_paid:EUR"] == (0, 700)
        assert balances["payouts_in_transit:EUR"] == (0, 0)
        assert balances[f"merchant_payable:{s.flow.merchant_id}:EUR"] == (0, -700)


def test_a_refused_payout_fails_and_its_reservation_is_voided(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        payout_id = request_payout(s.flow, 300, destination="ba_closed")
        saga = ended(s, payout_id)
        assert (saga["state"], saga["outcome"]) == ("failed", "failed")
        [failed] = sim_payouts(s, payout_id)
        assert (failed["status"], failed["failure_code"]) == ("failed", "account_closed")
        assert processor_payout(s, payout_id) == ("failed", "account_closed")
        assert [e["type"] for e in s.flow.emitted(payout_id)] == ["payout.failed"]
        s.ledger_check()
        balances = ledger_balances(s)
        # Reserved, then released: nothing is left in transit, nothing was paid out.
        assert balances["payouts_in_transit:EUR"] == (0, 0)
        assert balances[f"merchant_payable:{s.flow.merchant_id}:EUR"] == (0, 0)
        assert "payouts_paid:EUR" not in balances


def _commands_done(s: Stack, total: int) -> bool:
    commands_topic = topics(s.flow.settings).commands
    return committed_total(s.flow.settings, GROUP_PROCESSOR_COMMANDS, commands_topic) == total


def balance(s: Stack) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {s.flow.api_key}"}
    got = local_http.client().get(f"{s.flow.api_url}/v1/balance", headers=headers, timeout=30)
    assert got.status_code == 200, got.text
    return dict(got.json())


def available(s: Stack, currency: str = "USD") -> int:
    found = [f["amount"] for f in balance(s)["available"] if f["currency"] == currency]
    return found[0] if found else 0


def payout_of(s: Stack, payout_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {s.flow.api_key}"}
    got = local_http.client().get(
        f"{s.flow.api_url}/v1/payouts/{payout_id}", headers=headers, timeout=30
    )
    assert got.status_code == 200, got.text
    return dict(got.json())


def test_fifty_payouts_at_once_never_overdraw_and_each_is_paid_once(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        for _ in range(3):
            s.reaches(s.flow.pay(amount=1000)["id"], "succeeded")
        wait_for(lambda: available(s) == 3000, what="the captures in the balance")
        assert (
            s.post("/v1/payouts", {"amount": 3001, "currency": "USD"}).json()["error"]["code"]
            == "insufficient_balance"
        )

        def pay_out(n: int) -> httpx.Response:
            return s.post("/v1/payouts", {"amount": 100, "currency": "USD"}, f"po-{n}")

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(pay_out, range(50)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [202] * 30 + [422] * 20, statuses
        refused = [a.json()["error"] for a in answers if a.status_code == 422]
        assert {(e["code"], e["param"]) for e in refused} == {("insufficient_balance", "amount")}
        assert available(s) == 0
        # A retry of an accepted payout is answered as first, reserving nothing again.
        first = next(n for n, a in enumerate(answers) if a.status_code == 202)
        again = pay_out(first)
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["id"] == answers[first].json()["id"]
        # A refusal did nothing and is not kept: its retry is judged afresh.
        refused_first = next(n for n, a in enumerate(answers) if a.status_code == 422)
        afresh = pay_out(refused_first)
        assert afresh.status_code == 422
        assert "Idempotent-Replayed" not in afresh.headers
        assert available(s) == 0
        accepted = [a.json()["id"] for a in answers if a.status_code == 202]

        def paid(payout_id: str) -> bool:
            status: str = payout_of(s, payout_id)["status"]
            return status == "paid"

        for payout_id in accepted:
            wait_for(partial(paid, payout_id), what=payout_id)
        assert s.sim_stats()["payouts"] == 30
        listed = (
            local_http.client()
            .get(
                f"{s.flow.api_url}/v1/payouts",
                params={"limit": 100},
                headers={"Authorization": f"Bearer {s.flow.api_key}"},
            )
            .json()
        )
        assert sorted(p["id"] for p in listed["data"]) == sorted(accepted)
        assert available(s) == 0
        s.ledger_check()
        balances = ledger_balances_in(s, "USD")
        assert balances["payouts_paid:USD"] == (0, 3000)
        assert balances[f"merchant_payable:{s.flow.merchant_id}:USD"] == (0, 0)


def test_a_failed_payout_gives_its_amount_back_to_the_balance(
    settings: Settings, tmp_path: Path
) -> None:
    with stack(settings, tmp_path) as s:
        s.reaches(s.flow.pay(amount=1000)["id"], "succeeded")
        wait_for(lambda: available(s) == 1000, what="the capture in the balance")
        body = {"amount": 400, "currency": "USD", "destination": "ba_closed"}
        created = s.post("/v1/payouts", body)
        assert created.status_code == 202, created.text
        payout_id = created.json()["id"]
        wait_for(lambda: payout_of(s, payout_id)["status"] == "failed", what="the payout to fail")
        assert payout_of(s, payout_id)["failure_reason"] == "payout_refused"
        wait_for(lambda: available(s) == 1000, what="the amount back in the balance")
        assert s.saga(f"payout:{payout_id}")["outcome"] == "failed"
        s.ledger_check()
        # The operator's CLI does what the API does, for any merchant.
        merchant = s.flow.merchant_id
        shown = flowpay("balance", "--merchant", merchant, "--json", env=s.env)
        assert json.loads(shown.stdout)["available"] == [{"amount": 1000, "currency": "USD"}]
        args = ["payout", "--merchant", merchant, "--currency", "usd", "--json"]
        paid = flowpay(*args, "--amount", "600", env=s.env)
        assert paid.returncode == 0, paid.stderr
        assert json.loads(paid.stdout)["status"] == "pending"
        over = flowpay(*args, "--amount", "401", env=s.env)
        assert over.returncode == 2
        assert over.stderr.count("\n") == 1
        assert "insufficient_balance" in over.stderr
        assert "400 USD is available" in over.stderr
        unknown = flowpay("balance", "--merchant", "mer_nobody", env=s.env)
        assert (unknown.returncode, unknown.stderr.count("\n")) == (2, 1)


def test_merchants_are_told_of_paid_and_failed_payouts_by_webhook(
    settings: Settings, tmp_path: Path
) -> None:
    env = {"FLOWPAY_NOTIFIER__POLL_INTERVAL_S": "0.1"}
    with receiver(free_port()) as hook, flow(settings, tmp_path, extra_env=env) as f:
        hook.secret = f.start_downstream(hook.url)
        s = Stack(f)
        s.reaches(f.pay(amount=1000)["id"], "succeeded")
        wait_for(lambda: available(s) == 1000, what="the capture in the balance")
        paid = s.post("/v1/payouts", {"amount": 300, "currency": "USD"}).json()["id"]
        body = {"amount": 200, "currency": "USD", "destination": "ba_closed"}
        failed = s.post("/v1/payouts", body).json()["id"]
        hook.wait_for(3)
        told = {r.body["data"]["id"]: r for r in hook.wait_for(3)}
        assert told[paid].body["type"] == "payout.paid"
        assert told[paid].body["data"] | {"created_at": 0, "updated_at": 0} == {
            "id": paid, "object": "payout", "amount": 300, "currency": "USD",
            "destination": None, "status": "paid", "failure_reason": None,
            "created_at": 0, "updated_at": 0,
        }  # fmt: skip
        assert told[failed].body["type"] == "payout.failed"
        assert (told[failed].body["data"]["status"], told[failed].body["data"]["failure_reason"]) == (
            "failed", "payout_refused",
        )  # fmt: skip
        assert all(r.signature_ok for r in told.values())
        # The API shows what the webhook said.
        assert payout_of(s, paid) | {"updated_at": 0} == told[paid].body["data"] | {"updated_at": 0}


# --- payouts the gateway pays later: pure rules --------------------------------------------------

PAYOUT_CONFIG = ProcessorSettings(recheck_first_s=60, recheck_max_s=3600, pending_max_checks=3)


@pytest.mark.parametrize(
    ("outcome", "row"),
    [
        (PayoutSent("po_s1", "paid"), PayoutOutcomeRow("paid", "po_s1", None)),
        # Stripe's payouts travel for days: recorded, the command done, landed later.
        (PayoutSent("po_s1", "pending"), PayoutOutcomeRow("in_transit", "po_s1", None)),
        (PayoutSent("po_s1", "in_transit"), PayoutOutcomeRow("in_transit", "po_s1", None)),
        (PayoutFailedAt("po_s1", "account_closed"),
         PayoutOutcomeRow("failed", "po_s1", "account_closed")),
        (Rejected("HTTP 400"), PayoutOutcomeRow("failed", None, "gateway_rejected")),
        (Unknown("timeout"), None),  # no answer: the command is taken again, same key
    ],
)  # fmt: skip
def test_how_a_payout_stands_by_the_gateways_answer(
    outcome: PayoutOutcome, row: PayoutOutcomeRow | None
) -> None:
    assert outcome_row(outcome) == row


def payout_report(kind: str, failure: str | None = None) -> GatewayReported:
    return GatewayReported(provider="stripe", gateway_event_id="evt_1", gateway_event_type=kind,
                           object_id="po_s1", status=kind.split(".")[1], failure_reason=failure,
                           livemode=False)  # fmt: skip


def test_stripes_reports_say_paid_or_failed_with_its_code() -> None:
    assert reported_row(payout_report("payout.paid")) == PayoutOutcomeRow("paid", "po_s1", None)
    failed = reported_row(payout_report("payout.failed", "no_account"))
    assert failed == PayoutOutcomeRow("failed", "po_s1", "no_account")
    assert reported_row(payout_report("payout.failed")).failure == "failed"


def in_transit(checks: int) -> PayoutRecord:
    return PayoutRecord("po_1", "mer_1", 700, "EUR", "in_transit", "po_s1", None, "c", checks)


def test_a_payout_in_transit_is_looked_up_a_bounded_number_of_times() -> None:
    assert [next_look_up_s(PAYOUT_CONFIG, in_transit(n)) for n in range(4)] == [
        60.0, 120.0, None, None,
    ]  # fmt: skip
