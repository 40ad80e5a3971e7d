"""The chaos scenario, CI-sized: a few hundred payments, one fault of each kind, every invariant.

It runs on a stack of its own (it kills its Kafka and restarts its PostgreSQL), so the shared
stack is untouched; `make test` runs it after the main suite, its three tests at once on their
three stacks (`pytest -m chaos -n 3`): loaded together, every invariant must hold all the same.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from chaos.faults import FAILOVERS, KILL_KAFKA_LEADER, KILL_PG_PRIMARY, KINDS, REBALANCE
from chaos.scenario import SECRETS, Config, Outcome, fault_kinds, run

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]
# Each fault short, and the next soon after the last recovered: one of each within ~2 minutes.
CI = Config(payments=300, duration_s=60, rounds=1, window_s=2.0, gap_s=0.6)


def _assert_clean(outcome: Outcome) -> None:
    print("seconds:", {k: round(v, 1) for k, v in outcome.seconds.items()})  # shown with -s
    print(
        "recoveries:", [(f.kind, f.recovery_s and round(f.recovery_s, 1)) for f in outcome.faults]
    )
    found = [f"{name}: {line}" for name, lines in outcome.violations.items() for line in lines]
    assert not found, f"{len(found)} violations (files kept in {outcome.home}):\n" + "\n".join(
        found[:100]
    )


def _assert_every_fault_ran(outcome: Outcome, kinds: tuple[str, ...]) -> None:
    assert sorted(f.kind for f in outcome.faults) == sorted(kinds)


def test_one_of_each_fault_under_load_breaks_no_invariant() -> None:
    outcome = run(replace(CI, seed=11))

    _assert_clean(outcome)
    _assert_every_fault_ran(outcome, KINDS)
    assert outcome.statuses.get("succeeded", 0) > 0
    assert outcome.statuses.get("failed", 0) > 0
    assert outcome.refunds, "the load made no refund"
    assert outcome.statuses.get("canceled", 0) > 0, "no authorization was canceled or expired"
    assert any(a.accepted for a in outcome.actions), "the load captured or canceled nothing"
    # Payouts were paid and failed (a failing test bank account), and those above any balance
    # refused (invariant 13 checks each was refused).
    assert outcome.payout_statuses.get("paid", 0) > 0, outcome.payout_statuses
    assert outcome.payout_statuses.get("failed", 0) > 0, outcome.payout_statuses
    assert outcome.overdrafts, "the load asked for no payout above the balance"
    # The secrets scan ran over something: it is one of the checks, and it found nothing.
    assert SECRETS in outcome.violations


def test_scaled_out_with_rebalances_breaks_no_invariant() -> None:
    outcome = run(replace(CI, payments=200, duration_s=45, seed=12, scale_out=True))

    _assert_clean(outcome)
    _assert_every_fault_ran(outcome, (*KINDS, REBALANCE))


@pytest.mark.timeout(600)  # three brokers and a standby to start, two failovers to mend
def test_on_a_cluster_losing_a_broker_or_the_primary_loses_nothing_acknowledged() -> None:
    # The faults of the servers alone: the other kinds run in the tests above, without a
    # cluster's start and its mending after each failover. "restart postgres" stops and starts
    # both servers of the pair under load: nothing acknowledged may be lost.
    servers = (KILL_KAFKA_LEADER, KILL_PG_PRIMARY, "kill kafka", "restart postgres")
    config = replace(
        CI, payments=200, duration_s=45, seed=13, brokers=3, pg_standby=True, only=servers
    )
    outcome = run(config)

    _assert_clean(outcome)
    _assert_every_fault_ran(outcome, fault_kinds(config))
    assert {KILL_KAFKA_LEADER, KILL_PG_PRIMARY} <= {f.kind for f in outcome.faults}
    # Each failover recovered: a probe payment went all the way through afterwards.
    assert all(f.recovery_s is not None for f in outcome.faults if f.kind in FAILOVERS)
