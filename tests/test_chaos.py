"""The chaos scenario, CI-sized: a few hundred payments, one fault of each kind, every invariant.

It runs on a stack of its own (it kills its Kafka and restarts its PostgreSQL), so the shared
stack is untouched; `make test` runs it after the main suite (`pytest -m chaos -p no:xdist`).
"""

from __future__ import annotations

import pytest

from chaos.faults import KINDS, REBALANCE
from chaos.scenario import SECRETS, Config, Outcome, run

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]


def _assert_clean(outcome: Outcome) -> None:
    found = [f"{name}: {line}" for name, lines in outcome.violations.items() for line in lines]
    assert not found, f"{len(found)} violations (files kept in {outcome.home}):\n" + "\n".join(
        found[:100]
    )


def _assert_every_fault_ran(outcome: Outcome, kinds: tuple[str, ...]) -> None:
    assert sorted(f.kind for f in outcome.faults) == sorted(kinds)


def test_one_of_each_fault_under_load_breaks_no_invariant() -> None:
    outcome = run(Config(payments=300, duration_s=60, seed=11, rounds=1, window_s=2.5))

    _assert_clean(outcome)
    _assert_every_fault_ran(outcome, KINDS)
    assert outcome.statuses.get("succeeded", 0) > 0
    assert outcome.statuses.get("failed", 0) > 0
    assert outcome.refunds, "the load made no refund"
    # The secrets scan ran over something: it is one of the checks, and it found nothing.
    assert SECRETS in outcome.violations


def test_scaled_out_with_rebalances_breaks_no_invariant() -> None:
    outcome = run(
        Config(payments=200, duration_s=45, seed=12, rounds=1, window_s=2.5, scale_out=True)
    )

    _assert_clean(outcome)
    _assert_every_fault_ran(outcome, (*KINDS, REBALANCE))
