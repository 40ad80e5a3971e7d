"""The processor with the gateway simulator, real Kafka and real PostgreSQL, all as processes."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import flowpay
from tests.helpers.flow import Flow, flow
from tests.helpers.metrics import MetricPorts, value
from tests.helpers.waiting import wait_for
from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import admin_url

# How long the late-charge watch lasts in the test of its window.
WINDOW_SETTING = "FLOWPAY_PROCESSOR__LATE_CHARGE_WINDOW_S"
WINDOW_S = 3.0
REFUND_BACKLOG = "flowpay_reconciler_refund_backlog"


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
        _wait_held_requests_done(f)
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
        wait_for(lambda: _reversed(f, payment["id"]), what="the reversal")
        [charge] = f.sim_charges(payment["id"])
        assert _reversed(f, payment["id"]) == charge["id"]
        assert charge["amount_refunded"] == charge["amount"]
        types = [e["type"] for e in f.emitted(payment["id"])]
        assert types == ["payment.processing", "payment.failed", "payment.charge_reversed"]
        assert f.payment(payment["id"])["status"] == "failed"


@contextmanager
def _watched_failure(settings: Settings, tmp_path: Path) -> Iterator[tuple[Flow, str]]:
    """A payment failed with gateway_timeout and watched for a late charge, for WINDOW_S.

    No charge is made (every charge is answered 503); lookups are never faulted."""
    env = {"FLOWPAY_PROCESSOR__UNKNOWN_DEADLINE_S": "1", WINDOW_SETTING: str(WINDOW_S)}
    flags = ("--error-rate", "1.0", "--faulted", "charges")
    with flow(settings, tmp_path, sim_flags=flags, extra_env=env) as f:
        payment = f.pay()
        failed = f.wait_for(payment["id"], terminal)
        assert (failed["status"], failed["failure_reason"]) == ("failed", "gateway_timeout")
        yield f, payment["id"]


def test_the_late_charge_watch_ends_a_window_after_the_failure(
    settings: Settings, tmp_path: Path
) -> None:
    with _watched_failure(settings, tmp_path) as (f, payment_id):
        wait_for(lambda: not _deferred(f, payment_id), timeout_s=30, what="the watch to end")
        # When the processor settled the payment as failed (the failed event is stamped a
        # little later, once the settling transaction has staged it).
        state = f.processor_state(payment_id)
        assert state is not None
        failed_at = state["settled_at"]
        looked_up = [a["created_at"] for a in _attempts(f, payment_id) if a["kind"] == "lookup"]
        # It watched the whole window, measured from the failure: its last lookup was asked
        # after the window's end (the attempt is recorded once answered).
        assert (looked_up[-1] - failed_at).total_seconds() > WINDOW_S
        assert f.sim_charges(payment_id) == []


def test_a_late_charge_found_is_reversed_even_once_the_window_is_over(
    settings: Settings, tmp_path: Path
) -> None:
    with _watched_failure(settings, tmp_path) as (f, payment_id):
        # From now on the refund API fails, and a charge for the payment lands late.
        _set_faults(f, faulted=["refunds"])
        late = _charge_at_the_gateway(f, payment_id)
        failed_at = _emitted_at(f, payment_id, "payment.failed")

        def reversal_tried_after_the_window() -> bool:
            return any(
                a["kind"] == "reversal" and (a["created_at"] - failed_at).total_seconds() > WINDOW_S
                for a in _attempts(f, payment_id)
            )

        wait_for(reversal_tried_after_the_window, timeout_s=30, what="a reversal past the window")
        assert _deferred(f, payment_id), "a late charge found must not be let go"
        f.faults(error_rate=0.0)
        wait_for(lambda: _reversed(f, payment_id) == late, what="the reversal")
        [charge] = f.sim_charges(payment_id)
        assert charge["amount_refunded"] == charge["amount"]


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


def test_with_the_refund_api_failing_charges_keep_flowing(
    settings: Settings, tmp_path: Path
) -> None:
    # Refunds whose outcome is unknown go to the reconciler instead of holding a slot of
    # processor.max_in_flight each until the gateway answers.
    slots = 4
    flags = ("--error-rate", "1.0", "--faulted", "refunds")
    metrics = MetricPorts()
    env = {"FLOWPAY_PROCESSOR__MAX_IN_FLIGHT": str(slots), **metrics.env()}
    with flow(settings, tmp_path, sim_flags=flags, extra_env=env) as f:
        paid = [f.pay(amount=1000)["id"] for _ in range(3 * slots)]
        for payment_id in paid:
            f.wait_for(payment_id, terminal)
        refunds = [f.refund(payment_id).json()["id"] for payment_id in paid]
        wait_for(
            lambda: _unknown_refunds(f, paid) >= slots,
            what="as many refunds as slots to meet the failing refund API",
        )
        later = [f.pay()["id"] for _ in range(2 * slots)]
        for payment_id in later:
            assert f.wait_for(payment_id, terminal, timeout_s=30)["status"] == "succeeded"
        assert {_api_refund(f, refund_id)[0] for refund_id in refunds} == {"requested"}
        wait_for(
            lambda: value(metrics.scrape("processor"), REFUND_BACKLOG) == len(refunds),
            what="the refunds in the reconciler's backlog",
        )

        # Once the refund API answers again, the reconciler settles each refund, once.
        f.faults(error_rate=0.0)
        for payment_id in paid:
            f.wait_for(payment_id, lambda p: p["status"] == "refunded")
            [charge] = f.sim_charges(payment_id)
            assert charge["amount_refunded"] == 1000
            refunded = [e for e in f.emitted(payment_id) if e["type"] == "payment.refunded"]
            assert len(refunded) == 1
        assert {_api_refund(f, refund_id) for refund_id in refunds} == {("succeeded", None)}
        wait_for(
            lambda: value(metrics.scrape("processor"), REFUND_BACKLOG) == 0,
            what="the reconciler's refund backlog to empty",
        )


def test_a_refund_whose_answer_is_lost_is_found_and_made_once(
    settings: Settings, tmp_path: Path
) -> None:
    flags = ("--lost-ack-rate", "1.0", "--faulted", "refunds")
    with flow(settings, tmp_path, sim_flags=flags) as f:
        payment = f.pay(amount=1000)
        f.wait_for(payment["id"], terminal)
        refund_id = f.refund(payment["id"], 400).json()["id"]
        done = f.wait_for(payment["id"], lambda p: p["refunded_amount"] > 0)
        assert (done["status"], done["refunded_amount"]) == ("succeeded", 400)
        [charge] = f.sim_charges(payment["id"])
        assert charge["amount_refunded"] == 400
        [refund] = (
            local_http.client()
            .get(f.sim_url + "/v1/refunds", params={"reference": refund_id})
            .json()["data"]
        )
        assert _api_refund(f, refund_id) == ("succeeded", None)
        assert refund["amount"] == 400


def test_refund_of_a_failed_payment_is_refused_as_invalid_state(
    settings: Settings, tmp_path: Path
) -> None:
    with flow(settings, tmp_path) as f:
        payment = f.pay("pm_card_chargeDeclined")
        f.wait_for(payment["id"], terminal)
        # The API refuses it itself; a request that slips past (stale view) meets the processor.
        with psycopg.connect(admin_url(settings), autocommit=True) as conn:
            conn.execute(
                (
                    "UPDATE api.payments SET status = 'succeeded', amount_received = amount"
                    " WHERE id = %s"
                ),
                (payment["id"],),
            )
        response = f.refund(payment["id"])
        assert response.status_code == 202
        refund_id = response.json()["id"]
        wait_for(lambda: _api_refund(f, refund_id)[0] != "requested", what="the refund's answer")
        assert _api_refund(f, refund_id) == ("failed", "invalid_state")
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
        wait_for(lambda: len(f.sim_charges()) >= 20, what="the first charges")
        f.processes["processor"].send_signal(signal.SIGKILL)
        f.processes["processor"].wait(10)
        assert len(f.sim_charges()) < 150, "the kill should land mid-stream"
        f.start("processor", ["run-processor"])
        for payment_id in ids:
            f.wait_for(payment_id, terminal, timeout_s=120)
        references = [c["reference"] for c in f.sim_charges()]
        assert sorted(references) == sorted(ids)  # exactly one charge per payment
        assert all(f.payment(i)["status"] == "succeeded" for i in ids)


def _wait_held_requests_done(f: Flow) -> None:
    """Wait until every request the simulator held for a timeout fault has been answered."""
    wait_for(lambda: _sim_stats(f)["held"] == 0, timeout_s=30, what="the held requests")


def _reversed(f: Flow, payment_id: str) -> str | None:
    """The late charge the processor refunded for a failed payment, if any."""
    return (f.processor_state(payment_id) or {}).get("reversed_charge_id")


def _deferred(f: Flow, payment_id: str) -> bool:
    """The processor handed the payment to its reconciler (its outcome is unknown)."""
    return (f.processor_state(payment_id) or {}).get("next_check_at") is not None


def _settled(f: Flow, payment_id: str) -> bool:
    return (f.processor_state(payment_id) or {}).get("state") in ("succeeded", "failed")


def _sim_stats(f: Flow) -> dict[str, Any]:
    return dict(local_http.client().get(f.sim_url + "/_sim/stats").json())


def _attempts(f: Flow, payment_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(admin_url(f.settings), row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT kind, outcome, detail, created_at FROM processor.attempts"
            " WHERE payment_id = %s ORDER BY id",
            (payment_id,),
        ).fetchall()


def _unknown_refunds(f: Flow, payment_ids: list[str]) -> int:
    """How many of these payments have had a refund call end with its outcome unknown."""
    with psycopg.connect(admin_url(f.settings)) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT payment_id) FROM processor.attempts"
            " WHERE payment_id = ANY(%s) AND kind = 'refund' AND outcome = 'unknown'",
            (payment_ids,),
        ).fetchone()
    return int(row[0]) if row else 0


def _api_refund(f: Flow, refund_id: str) -> tuple[str, str | None]:
    """A refund's status and failure reason as the merchant sees them."""
    with psycopg.connect(admin_url(f.settings)) as conn:
        row = conn.execute(
            "SELECT status, failure_reason FROM api.refunds WHERE id = %s", (refund_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def _emitted_at(f: Flow, payment_id: str, kind: str) -> datetime:
    [event] = [e for e in f.emitted(payment_id) if e["type"] == kind]
    return datetime.fromisoformat(event["occurred_at"])


def _set_faults(f: Flow, **changes: object) -> None:
    assert local_http.client().post(f.sim_url + "/_sim/faults", json=changes).status_code == 200


def _charge_at_the_gateway(f: Flow, reference: str) -> str:
    """A charge made for ``reference`` outside the processor (as one landing late); its id."""
    body = {"amount": 1999, "currency": "USD", "payment_method": "pm_card_visa"}
    response = local_http.client().post(
        f.sim_url + "/v1/charges",
        json=body | {"reference": reference},
        headers={"Idempotency-Key": f"late-{reference}"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])
