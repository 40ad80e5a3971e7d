"""The processor with the gateway simulator, real Kafka and real PostgreSQL, all as processes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import flowpay
from tests.helpers.flow import Flow, flow
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.db import database_url


def terminal(payment: dict[str, object]) -> bool:
    return payment["status"] in ("succeeded", "failed", "refunded")


def test_success_charges_once_and_tells_every_step(settings: Settings, tmp_path: Path) -> None:
    with flow(settings, tmp_path) as f:
        payment = f.pay()
        done = f.wait_for(payment["id"], terminal)
        assert done["status"] == "succeeded"
        [charge] = f.sim_charges(payment["id"])
        assert charge["amount"] == 1999
        state = f.processor_state(payment["id"])
        assert state is not None
        assert (state["state"], state["charge_id"]) == ("succeeded", charge["id"])
        assert [e["type"] for e in f.emitted(payment["id"])] == [
            "payment.processing",
            "payment.succeeded",
        ]


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("pm_card_chargeDeclined", "card_declined"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_declines_fail_with_their_reason(
    settings: Settings, tmp_path: Path, method: str, reason: str
) -> None:
    with flow(settings, tmp_path) as f:
        payment = f.pay(method)
        done = f.wait_for(payment["id"], terminal)
        assert (done["status"], done["failure_reason"]) == ("failed", reason)
        assert [e["type"] for e in f.emitted(payment["id"])] == [
            "payment.processing",
            "payment.failed",
        ]


def test_lost_acknowledgements_charge_exactly_once_and_succeed(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path, sim_flags=("--lost-ack-rate", "1.0")) as f:
        payment = f.pay()
        done = f.wait_for(payment["id"], terminal)
        assert done["status"] == "succeeded"
        assert len(f.sim_charges(payment["id"])) == 1


def test_timeouts_that_later_succeed(settings: Settings, tmp_path: Path) -> None:
    with flow(settings, tmp_path, sim_flags=("--timeout-rate", "1.0")) as f:
        payment = f.pay()
        f.wait_for(
            payment["id"],
            lambda p: p["status"] == "processing" and _deferred(f, p["id"]),
        )
        assert f.payment(payment["id"])["status"] == "processing"
        f.faults(timeout_rate=0.0)
        done = f.wait_for(payment["id"], terminal)
        assert done["status"] == "succeeded"
        # The held requests land late under the same idempotency key: still one charge.
        _wait_held_requests_done(f.sim_url)
        assert len(f.sim_charges(payment["id"])) == 1


def test_a_retry_overlapping_the_first_charge_request_never_fails_the_payment(
    settings: Settings, tmp_path: Path
) -> None:
    # The gateway takes longer than the client waits, so the client's retry (same key) arrives
    # while the first request is still being processed: 409 idempotency_key_in_use, an
    # unknown outcome. The first request's charge lands after it.
    with flow(settings, tmp_path, sim_flags=("--latency-ms", "1500")) as f:
        ids = [f.pay()["id"] for _ in range(3)]
        wait_for(lambda: _sim_stats(f)["conflicts"] >= len(ids), what="the retries' 409s")
        wait_for(
            lambda: all(_deferred(f, i) or _settled(f, i) for i in ids),
            what="every charge's first try to end",
        )
        f.faults(latency_ms=0)
        wait_for(lambda: len(f.sim_charges()) == len(ids), what="the first requests' charges")
        for payment_id in ids:
            done = f.wait_for(payment_id, terminal)
            [charge] = f.sim_charges(payment_id)
            assert (done["status"], charge["status"]) == ("succeeded", "succeeded"), done
            assert (f.processor_state(payment_id) or {})["charge_id"] == charge["id"]
            assert [e["type"] for e in f.emitted(payment_id)] == [
                "payment.processing",
                "payment.succeeded",
            ]


def test_gateway_down_past_the_retry_budget_stays_processing_then_resolves(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as f:
        f.stop_sim()
        payment = f.pay()
        f.wait_for(
            payment["id"],
            lambda p: p["status"] == "processing" and _deferred(f, p["id"]),
        )
        assert f.payment(payment["id"])["status"] == "processing"
        f.start_sim()
        done = f.wait_for(payment["id"], terminal)
        assert done["status"] == "succeeded"
        assert len(f.sim_charges(payment["id"])) == 1


def test_late_charge_on_a_failed_payment_is_reversed(settings: Settings, tmp_path: Path) -> None:
    env = {"FLOWPAY_PROCESSOR__UNKNOWN_DEADLINE_S": "1", "FLOWPAY_GATEWAY_SIM__TIMEOUT_HOLD_S": "8"}
    with flow(settings, tmp_path, sim_flags=("--timeout-rate", "1.0"), extra_env=env) as f:
        payment = f.pay()
        failed = f.wait_for(payment["id"], terminal)
        assert (failed["status"], failed["failure_reason"]) == ("failed", "gateway_timeout")
        f.faults(timeout_rate=0.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = f.processor_state(payment["id"]) or {}
            if state.get("reversed_charge_id"):
                break
            time.sleep(0.1)
        [charge] = f.sim_charges(payment["id"])
        assert state["reversed_charge_id"] == charge["id"]
        assert charge["amount_refunded"] == charge["amount"]
        types = [e["type"] for e in f.emitted(payment["id"])]
        assert types == ["payment.processing", "payment.failed", "payment.charge_reversed"]
        assert f.payment(payment["id"])["status"] == "failed"


def test_partial_and_full_refunds(settings: Settings, tmp_path: Path) -> None:
    with flow(settings, tmp_path) as f:
        payment = f.pay(amount=1000)
        f.wait_for(payment["id"], terminal)
        assert f.refund(payment["id"], 300).status_code == 202
        partial = f.wait_for(payment["id"], lambda p: p["refunded_amount"] == 300)
        assert partial["status"] == "succeeded"
        # The rest through the operator's CLI: the same code path as the API's.
        done = flowpay("refund", payment["id"], "--wait", "--json", env=f.env)
        assert done.returncode == 0, done.stderr
        refund = json.loads(done.stdout)
        assert (refund["status"], refund["amount"]) == ("succeeded", 700)
        full = f.wait_for(payment["id"], lambda p: p["status"] == "refunded")
        assert full["refunded_amount"] == 1000
        [charge] = f.sim_charges(payment["id"])
        assert charge["amount_refunded"] == 1000
        emitted = [e for e in f.emitted(payment["id"]) if e["type"] == "payment.refunded"]
        assert [e["data"]["refunded_total"] for e in emitted] == [300, 1000]


def test_refund_of_a_failed_payment_is_refused_as_invalid_state(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as f:
        payment = f.pay("pm_card_chargeDeclined")
        f.wait_for(payment["id"], terminal)
        # The API refuses it itself; a request that slips past (stale view) meets the processor.
        with psycopg.connect(database_url(settings), autocommit=True) as conn:
            conn.execute(
                "UPDATE api.payments SET status = 'succeeded' WHERE id = %s", (payment["id"],)
            )
        response = f.refund(payment["id"])
        assert response.status_code == 202
        refund_id = response.json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with psycopg.connect(database_url(settings)) as conn:
                row = conn.execute(
                    "SELECT status, failure_reason FROM api.refunds WHERE id = %s", (refund_id,)
                ).fetchone()
            if row and row[0] != "requested":
                break
            time.sleep(0.1)
        assert row == ("failed", "invalid_state")
        assert not [c for c in f.sim_charges(payment["id"]) if c["amount_refunded"]]


def test_sigkill_mid_batch_no_double_charge_no_stuck_payment(
    settings: Settings, tmp_path: Path
) -> None:
    # Few at once and a slow gateway, so that the kill lands while most are still to do.
    slow = {"FLOWPAY_PROCESSOR__MAX_IN_FLIGHT": "8"}
    with flow(settings, tmp_path, sim_flags=("--latency-ms", "100"), extra_env=slow) as f:
        f.processes["processor"].terminate()  # the backlog builds up first
        f.processes["processor"].wait(30)
        ids = [f.pay()["id"] for _ in range(150)]
        f.start("processor", ["run-processor"])
        deadline = time.monotonic() + 60
        while len(f.sim_charges()) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        f.processes["processor"].send_signal(signal.SIGKILL)
        f.processes["processor"].wait(10)
        assert len(f.sim_charges()) < 150, "the kill should land mid-stream"
        f.start("processor", ["run-processor"])
        for payment_id in ids:
            f.wait_for(payment_id, terminal, timeout_s=120)
        references = [c["reference"] for c in f.sim_charges()]
        assert sorted(references) == sorted(ids)  # exactly one charge per payment
        assert all(f.payment(i)["status"] == "succeeded" for i in ids)


def _wait_held_requests_done(sim_url: str) -> None:
    """Wait until every request the simulator held for a timeout fault has been answered."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = httpx.get(sim_url + "/_sim/stats").json()
        if stats.get("held", 0) == 0:
            return
        time.sleep(0.1)
    raise AssertionError("held requests never finished")


def _deferred(f: Flow, payment_id: str) -> bool:
    """The processor handed the payment to its reconciler (its outcome is unknown)."""
    return (f.processor_state(payment_id) or {}).get("next_check_at") is not None


def _settled(f: Flow, payment_id: str) -> bool:
    return (f.processor_state(payment_id) or {}).get("state") in ("succeeded", "failed")


def _sim_stats(f: Flow) -> dict[str, Any]:
    return dict(httpx.get(f.sim_url + "/_sim/stats").json())
