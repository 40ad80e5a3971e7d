"""flowpay replay: rebuild the ledger from the event log into a shadow, check it, swap it in."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Sequence
from dataclasses import replace

import pytest
import typer
from typer.testing import CliRunner, Result

from flowpay_cli.commands import ledger as ledger_cli
from tests.conftest import env_for
from tests.helpers.db import Conn
from tests.test_ledger_support import (
    Scenario,
    balances,
    ledger_thread,
    merged,
    mixed,
    nonzero,
    produce_raw,
    publish,
    quick,
    snapshot,
    start_ledger_process,
    stop_process,
    wait_consumed,
)
from workers.core.config import Settings
from workers.core.events import Event
from workers.ledger.check import run_checks
from workers.ledger.replay import Replay, ReplayError, _collector_between_batches
from workers.ledger.rules import Code, Direction, PaymentState, StandardRules, Transfer, house


class RefundsCreditTheGateway(StandardRules):
    """The bug to fix: a refund credits gateway_receivable instead of refunds_paid."""

    def refund(self, event: Event, state: PaymentState) -> Transfer:
        transfer = super().refund(event, state)
        lines = tuple(
            replace(line, account=house(Code.GATEWAY_RECEIVABLE, line.currency))
            if line.direction is Direction.CREDIT
            else line
            for line in transfer.lines
        )
        return replace(transfer, lines=lines)


def build(
    settings: Settings, db: Conn, scenario: Scenario, rules: StandardRules | None = None
) -> int:
    """Publish the scenario (and a bad message) and let run-ledger post all of it."""
    produce_raw(settings, b"{not an event", key=b"pay_00000")
    sent = 1 + publish(settings, scenario.events)
    with ledger_thread(settings, rules or StandardRules()):
        wait_consumed(db, sent)
    return sent


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_between_batches_the_collector_is_off_and_each_collect_frees_cycles() -> None:
    assert gc.isenabled()
    with _collector_between_batches() as collect:
        assert not gc.isenabled()
        cycle = weakref.ref(_Node())
        assert cycle() is not None
        collect()
        assert cycle() is None
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _collector_between_batches():
        raise RuntimeError("a batch failed")
    assert gc.isenabled(), "back on, whatever happened to the batches"
    gc.disable()
    try:
        with _collector_between_batches():
            pass
        assert not gc.isenabled(), "left off when it was off before"
    finally:
        gc.enable()


def schemas(db: Conn) -> set[str]:
    rows = db.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ledger%'").fetchall()
    return {str(r[0]) for r in rows}


def generation(db: Conn) -> int:
    row = db.execute("SELECT generation FROM ledger.state").fetchone()
    assert row is not None
    return int(row[0])


def replay(settings: Settings, from_offset: int = 0, partition: int | None = None) -> Replay:
    """A replay taken up to (not including) the swap."""
    job = Replay(settings, from_offset=from_offset, partition=partition)
    job.prepare()
    job.rebuild()
    failed = {r.name: r.violations for r in job.verify() if not r.ok}
    assert failed == {}
    return job


def test_replay_from_offset_0_reproduces_identical_balances_and_hash_chain(
    settings: Settings, db: Conn
) -> None:
    settings = quick(settings)
    scenario = mixed(36)
    build(settings, db, scenario)
    before = snapshot(db)
    assert before.balances == nonzero(scenario.expected)
    assert before.dead_letters == 1
    with replay(settings) as job:
        assert job.total == len(scenario.events) + 1
        assert job.changes() == []
        assert job.swap() == 2
    assert snapshot(db) == before
    assert snapshot(db, "ledger_previous") == before
    assert generation(db) == 2
    assert schemas(db) == {"ledger", "ledger_previous"}
    assert all(r.ok for r in run_checks(db))


def test_a_wrong_posting_rule_is_corrected_by_a_replay_with_the_fixed_rules(
    settings: Settings, db: Conn
) -> None:
    settings = quick(settings)
    scenario = mixed(24)
    build(settings, db, scenario, RefundsCreditTheGateway())
    wrong = balances(db)
    expected = nonzero(scenario.expected)
    assert wrong != expected
    assert all(r.ok for r in run_checks(db)), "this bug is one no check can see"
    with replay(settings) as job:
        changes = {(c.account, c.phase): c.difference for c in job.changes()}
        assert changes == {
            key: expected.get(key, 0) - wrong.get(key, 0)
            for key in set(wrong) | set(expected)
            if expected.get(key, 0) != wrong.get(key, 0)
        }
        job.swap()
    assert balances(db) == expected
    assert all(r.ok for r in run_checks(db))


def test_a_running_run_ledger_carries_on_from_the_rebuilt_ledger(
    settings: Settings, db: Conn
) -> None:
    first, during, after = mixed(18), mixed(18, start=18), mixed(18, start=36)
    sent = publish(settings, first.events)
    process = start_ledger_process(settings, FLOWPAY_WORKER__BATCH_SIZE="20")
    try:
        wait_consumed(db, sent)
        with Replay(settings, from_offset=0) as job:
            job.prepare()  # the end offsets are taken here: `during` is not replayed
            sent += publish(settings, during.events)
            wait_consumed(db, sent)  # posted to the ledger that is about to be replaced
            job.rebuild()
            assert all(r.ok for r in job.verify())
            job.swap()
        # The new ledger stops where the replay did; run-ledger re-posts `during` into it.
        wait_consumed(db, sent)
        sent += publish(settings, after.events)
        wait_consumed(db, sent)
    finally:
        stop_process(process)
    total = merged(first, during, after)
    assert balances(db) == nonzero(total.expected)
    assert snapshot(db).events == len(total.events)
    assert all(r.ok for r in run_checks(db))


def test_replaying_one_partition_from_an_offset_rebuilds_only_that(
    settings: Settings, db: Conn
) -> None:
    settings = quick(settings)
    scenario = mixed(36)
    build(settings, db, scenario, RefundsCreditTheGateway())
    before = snapshot(db)
    refunds = db.execute(
        """SELECT source_partition, source_offset, amount, e.payment_id FROM ledger.events e
           WHERE type = 'payment.refunded' ORDER BY 1, 2"""
    ).fetchall()
    partition = refunds[len(refunds) // 2][0]
    in_partition = [r for r in refunds if r[0] == partition]
    cut = in_partition[len(in_partition) // 2][1]  # one refund of that partition before, one after
    fixed = [r for r in in_partition if r[1] >= cut]
    assert fixed
    assert len(fixed) < len(refunds)
    currency = {
        e.payment_id: str(getattr(e.data, "currency", ""))
        for e in scenario.events
        if e.type == "payment.initiated"
    }
    with replay(settings, from_offset=cut, partition=partition) as job:
        assert [s.partition for s in job.spans] == [partition]
        expected: dict[tuple[str, str], int] = {}
        for _, _, amount, payment in fixed:
            for code in ("gateway_receivable", "refunds_paid"):
                key = (f"{code}:{currency[payment]}", "posted")
                expected[key] = expected.get(key, 0) + amount
        assert {(c.account, c.phase): c.difference for c in job.changes()} == expected
        job.swap()
    after = snapshot(db)
    unchanged = [t for t in before.chain if t[1] != partition or t[5] < cut]
    assert [t for t in after.chain if t[1] != partition or t[5] < cut] == unchanged
    assert after.chain != before.chain
    assert all(r.ok for r in run_checks(db))


def cli(settings: Settings, args: Sequence[str], answer: str | None = None) -> Result:
    app = typer.Typer()
    app.command("replay")(ledger_cli.replay)
    app.command("other")(lambda: None)  # two commands: typer keeps "replay" a subcommand
    flowpay_env = {k: v for k, v in env_for(settings).items() if k.startswith("FLOWPAY_")}
    return CliRunner().invoke(app, ["replay", *args], input=answer, env=flowpay_env)


@pytest.fixture
def buggy(settings: Settings, db: Conn) -> tuple[Settings, Scenario]:
    settings = quick(settings)
    scenario = mixed(24)
    build(settings, db, scenario, RefundsCreditTheGateway())
    return settings, scenario


def test_dry_run_shows_the_changes_and_changes_nothing(
    buggy: tuple[Settings, Scenario], db: Conn
) -> None:
    settings, _ = buggy
    before = snapshot(db)
    done = cli(settings, ["--from-offset", "0", "--dry-run"])
    assert done.exit_code == 0, done.output
    assert "balance changes" in done.output
    assert "refunds_paid:USD" in done.output
    assert "dry run: the live ledger is unchanged" in done.output
    assert snapshot(db) == before
    assert generation(db) == 1
    assert schemas(db) == {"ledger"}


def test_replay_asks_before_the_swap_and_yes_swaps(
    buggy: tuple[Settings, Scenario], db: Conn
) -> None:
    settings, scenario = buggy
    before = snapshot(db)
    refused = cli(settings, ["--from-offset", "0"], answer="n\n")
    assert refused.exit_code == 0, refused.output
    assert "Swap the rebuilt ledger in?" in refused.output
    assert "not swapped" in refused.output
    assert snapshot(db) == before
    done = cli(settings, ["--from-offset", "0", "--yes"])
    assert done.exit_code == 0, done.output
    assert "events/s" in done.output
    assert "generation 2" in done.output
    assert balances(db) == nonzero(scenario.expected)


def test_an_interrupted_replay_leaves_the_live_ledger_untouched(
    buggy: tuple[Settings, Scenario], db: Conn
) -> None:
    settings, _ = buggy
    before = snapshot(db)

    def interrupt(_n: int) -> None:
        raise KeyboardInterrupt

    shadows: list[set[str]] = []

    def replay_until_interrupted() -> None:
        with Replay(settings, from_offset=0) as job:
            job.prepare()
            shadows.append(schemas(db))
            job.rebuild(interrupt)

    with pytest.raises(KeyboardInterrupt):
        replay_until_interrupted()
    assert shadows == [{"ledger", "ledger_shadow"}]
    assert snapshot(db) == before
    assert schemas(db) == {"ledger"}
    with replay(settings) as again:  # the lock was released
        assert again.changes()


def test_one_replay_at_a_time(settings: Settings, db: Conn) -> None:
    with Replay(settings, from_offset=0) as first:
        first.prepare()
        with (
            pytest.raises(ReplayError, match="another replay is running"),
            Replay(settings, from_offset=0) as second,
        ):
            second.prepare()
        assert "ledger_shadow" in schemas(db)  # the refused one did not drop the first one's shadow
