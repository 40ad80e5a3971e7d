"""run-ledger on real Kafka and PostgreSQL: what it posts, exactly once, whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.conftest import _drop_database, _new_database, isolated_database, override
from tests.helpers.db import Conn
from tests.helpers.kafka import committed_total, headers_of, read_topic
from tests.helpers.waiting import wait_for
from tests.test_ledger_support import (
    balances,
    connect_to,
    consumed,
    kill_process,
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
from workers.core.events import Event, EventType, Succeeded
from workers.core.heartbeat import heartbeat_age
from workers.core.topics import GROUP_LEDGER, topics
from workers.ledger.check import run_checks
from workers.ledger.inspect import ledger_view
from workers.ledger.rules import PaymentState, StandardRules, Transfer, transaction_id


def assert_checks_pass(db: Conn) -> None:
    failed = {r.name: r.violations for r in run_checks(db) if not r.ok}
    assert failed == {}


def count(db: Conn, query: str) -> int:
    row = db.execute(query).fetchone()
    return int(row[0]) if row else 0


def test_posts_every_event_as_the_rules_say_and_records_each_source(
    settings: Settings, db: Conn
) -> None:
    settings = quick(settings)
    scenario = mixed(36)
    sent = publish(settings, scenario.events)
    with ledger_thread(settings):
        wait_consumed(db, sent)
    assert balances(db) == nonzero(scenario.expected)
    assert_checks_pass(db)
    assert count(db, "SELECT count(*) FROM ledger.events") == len(scenario.events)
    recorded = db.execute(
        "SELECT DISTINCT type FROM ledger.events WHERE outcome = 'recorded' ORDER BY 1"
    ).fetchall()
    # Events after which nothing moves (a manual payment's hold moves at its authorization
    # request, not at the gateway's answer) are recorded as applied all the same.
    assert recorded == [
        ("payment.capture_requested",),
        ("payment.processing",),
        ("payment.refund_failed",),
        ("payment.refund_requested",),
        ("payment.requires_capture",),
    ]
    # Every entry names the Kafka message its event came in.
    assert (
        count(
            db,
            """SELECT count(*) FROM ledger.entries e JOIN ledger.events v
           ON v.event_id = e.event_id AND v.source_topic = e.source_topic
          AND v.source_partition = e.source_partition AND v.source_offset = e.source_offset""",
        )
        == count(db, "SELECT count(*) FROM ledger.entries")
        > 0
    )


def test_kafka_is_told_the_stored_offsets_for_lag_monitoring(settings: Settings, db: Conn) -> None:
    settings = quick(settings, batch_size=5)  # many batches: Kafka hears of them in fewer commits
    sent = publish(settings, mixed(36).events)
    with ledger_thread(settings):
        wait_consumed(db, sent)
        wait_for(
            lambda: committed_total(settings, GROUP_LEDGER, topics(settings).payments) == sent,
            timeout_s=30,
            what=f"the ledger group's committed offsets at the {sent} stored",
        )


def test_the_status_view_lists_a_payments_postings(settings: Settings, db: Conn) -> None:
    settings = quick(settings)
    scenario = mixed(1)  # pay_00000 succeeds and is refunded 300
    publish(settings, scenario.events)
    with ledger_thread(settings):
        wait_consumed(db, len(scenario.events))
    view = ledger_view(db, "pay_00000")
    assert [(p["kind"], p["phase"], p["direction"], p["account"], p["amount"]) for p in view] == [
        ("authorize", "pending", "debit", "gateway_receivable:USD", 1000),
        ("authorize", "pending", "credit", "merchant_payable:mer_a:USD", 1000),
        ("post", "pending", "debit", "merchant_payable:mer_a:USD", 1000),
        ("post", "pending", "credit", "gateway_receivable:USD", 1000),
        ("post", "posted", "debit", "gateway_receivable:USD", 1000),
        ("post", "posted", "credit", "merchant_payable:mer_a:USD", 1000),
        ("refund", "posted", "debit", "merchant_payable:mer_a:USD", 300),
        ("refund", "posted", "credit", "refunds_paid:USD", 300),
    ]
    initiated = scenario.events[0]
    assert view[0]["event_id"] == str(initiated.event_id)
    assert view[0]["transaction_id"] == str(transaction_id(initiated.event_id, 0))
    assert {"currency", "offset", "partition", "topic"} <= set(view[0])
    assert view[0]["offset"] == 0
    assert ledger_view(db, "pay_unknown") == []


def test_the_same_event_delivered_twice_posts_once(settings: Settings, db: Conn) -> None:
    settings = quick(settings, batch_size=7)  # duplicates land in the same batch and in the next
    scenario = mixed(12)
    sent = publish(settings, scenario.events, twice=True)
    assert sent == 2 * len(scenario.events)
    with ledger_thread(settings):
        wait_consumed(db, sent)
    assert count(db, "SELECT count(*) FROM ledger.events") == len(scenario.events)
    assert count(db, "SELECT count(*) FROM ledger.dead_letters") == 0  # a no-op, not a failure
    assert balances(db) == nonzero(scenario.expected)
    assert_checks_pass(db)


class UnbalancedRefunds(StandardRules):
    """A bug the database catches: refunds credit one unit less than they debit."""

    def refund(self, event: Event, state: PaymentState) -> Transfer:
        transfer = super().refund(event, state)
        debit, credit = transfer.lines
        return replace(transfer, lines=(debit, replace(credit, amount=credit.amount - 1)))


class CrashingRefunds(StandardRules):
    """A bug that raises: retried up to worker.max_attempts, then dead-lettered."""

    def refund(self, event: Event, state: PaymentState) -> Transfer:
        raise ZeroDivisionError("a bug in the refund rule")


@pytest.mark.parametrize(
    ("rules", "error"),
    [(UnbalancedRefunds(), "CheckViolation"), (CrashingRefunds(), "ZeroDivisionError")],
)
def test_a_failing_message_is_dead_lettered_once_and_the_rest_of_its_batch_posts(
    settings: Settings, db: Conn, rules: StandardRules, error: str
) -> None:
    settings = quick(settings)  # max_attempts=2
    scenario = mixed(12)
    sent = publish(settings, scenario.events)
    refunds = [e for e in scenario.events if e.type is EventType.REFUNDED]
    with ledger_thread(settings, rules) as ledger:
        wait_consumed(db, sent)
        assert ledger.applier.rejected == len(refunds)
    dead = read_topic(settings, topics(settings).dead_letters, len(refunds) + 1, timeout_s=5)
    assert len(dead) == len(refunds), "each refund is dead-lettered once"
    assert {headers_of(m)["dlq_error_type"] for m in dead} == {error}
    rows = db.execute("SELECT event_id FROM ledger.dead_letters").fetchall()
    assert {r[0] for r in rows} == {e.event_id for e in refunds}
    assert count(db, "SELECT count(*) FROM ledger.events") == len(scenario.events) - len(refunds)
    assert count(db, "SELECT count(*) FROM ledger.transactions WHERE kind = 'refund'") == 0
    # The books say what the ledger applied: every check holds.
    assert_checks_pass(db)


def test_bad_messages_are_dead_lettered_and_their_offsets_still_advance(
    settings: Settings, db: Conn
) -> None:
    settings = quick(settings)
    names = topics(settings)
    produce_raw(settings, b"\x00not json", key=b"pay_bad")
    orphan = mixed(1).events[2]  # payment.succeeded of a payment never initiated here
    assert orphan.type is EventType.SUCCEEDED
    assert isinstance(orphan.data, Succeeded)
    publish(settings, [orphan])
    scenario = mixed(6)
    sent = 2 + publish(settings, scenario.events)
    with ledger_thread(settings):
        wait_consumed(db, sent)
    dead = read_topic(settings, names.dead_letters, 2)
    assert sorted(headers_of(m)["dlq_error_type"] for m in dead) == [
        "MalformedEvent",
        "PostingRefused",
    ]
    assert all(headers_of(m)["dlq_group"] == "ledger" for m in dead)
    rows = db.execute("SELECT error_type, event_id FROM ledger.dead_letters ORDER BY 1").fetchall()
    assert rows == [("MalformedEvent", None), ("PostingRefused", orphan.event_id)]
    assert balances(db) == nonzero(scenario.expected)
    assert_checks_pass(db)


def blocked_on_a_lock(db: Conn) -> list[int]:
    """Backends of this database (other than ours) waiting for a lock."""
    rows = db.execute(
        """SELECT pid FROM pg_stat_activity WHERE datname = current_database()
           AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"""
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_a_lost_database_connection_rolls_the_batch_back_and_retries_it(
    settings: Settings, db: Conn
) -> None:
    settings = quick(settings)
    first, second = mixed(12), mixed(12, start=12)
    sent = publish(settings, first.events)
    with ledger_thread(settings) as ledger, connect_to(settings) as locker:
        wait_consumed(db, sent)
        with locker.transaction():
            # The next batch blocks when its entries update the balances: mid-batch.
            locker.execute("LOCK TABLE ledger.balances IN SHARE MODE")
            sent += publish(settings, second.events)
            wait_for(lambda: bool(blocked_on_a_lock(db)), what="a batch blocked mid-way")
            db.execute("SELECT pg_terminate_backend(%s)", (blocked_on_a_lock(db)[0],))
        wait_consumed(db, sent)
        assert ledger.applier.rejected == 0
    assert count(db, "SELECT count(*) FROM ledger.dead_letters") == 0
    total = merged(first, second)
    assert balances(db) == nonzero(total.expected)
    assert_checks_pass(db)


def test_two_consumers_in_the_group_post_everything_exactly_once(
    settings: Settings, db: Conn
) -> None:
    settings = quick(settings, batch_size=5)
    first, second = mixed(24), mixed(24, start=24)
    sent = publish(settings, first.events)
    with ledger_thread(settings) as one:
        wait_for(lambda: consumed(db) > 10, what="the first consumer to start")
        with ledger_thread(settings) as two:  # joins the group: partitions move mid-stream
            wait_for(lambda: bool(two.positions), what="a rebalance giving the second partitions")
            assert len(one.positions) + len(two.positions) <= 6
            sent += publish(settings, second.events)
            wait_consumed(db, sent)
        assert two.applier.applied > 0
    total = merged(first, second)
    assert balances(db) == nonzero(total.expected)
    assert count(db, "SELECT count(*) FROM ledger.events") == len(total.events)
    assert_checks_pass(db)


def test_run_ledger_beats_and_stops_cleanly_on_sigterm(settings: Settings, db: Conn) -> None:
    scenario = mixed(6)
    sent = publish(settings, scenario.events)
    process = start_ledger_process(settings)
    try:
        wait_consumed(db, sent)
        age = heartbeat_age("ledger")
        assert age is not None
        assert age < 10
    finally:
        stop_process(process)
    assert balances(db) == nonzero(scenario.expected)


@pytest.fixture
def twin(settings: Settings, base_settings: Settings, template_db: str) -> Iterator[Settings]:
    """Another fresh database on the same topics: where an undisturbed run keeps its books."""
    name = _new_database(base_settings, template_db)
    # Every role's URL on it (a role's own URL wins over ``database.url``).
    twin_db = isolated_database(base_settings, name)
    yield override(
        settings, "database", urls=twin_db.database.urls, admin_url=twin_db.database.admin_url
    )
    _drop_database(base_settings, name)


def test_sigkill_mid_batch_then_restart_gives_the_ledger_of_an_undisturbed_run(
    settings: Settings, db: Conn, twin: Settings
) -> None:
    first, second = mixed(30), mixed(30, start=30)
    sent = publish(settings, first.events)
    small_batches = {"FLOWPAY_WORKER__BATCH_SIZE": "20"}
    process = start_ledger_process(settings, **small_batches)
    with connect_to(settings) as locker:
        wait_consumed(db, sent)
        with locker.transaction():
            locker.execute("LOCK TABLE ledger.balances IN SHARE MODE")
            sent += publish(settings, second.events)
            wait_for(lambda: bool(blocked_on_a_lock(db)), what="a batch blocked mid-way")
            before = snapshot(db)
            kill_process(process)  # killed with the batch's events and transactions written
        after_kill = snapshot(db)
    assert after_kill == before, "the killed batch must leave nothing behind"
    assert consumed(db) == len(first.events)

    process = start_ledger_process(settings, **small_batches)
    try:
        wait_consumed(db, sent)
    finally:
        stop_process(process)

    undisturbed = start_ledger_process(twin)
    with connect_to(twin) as twin_db:
        try:
            wait_consumed(twin_db, sent)
        finally:
            stop_process(undisturbed)
        assert snapshot(db) == snapshot(twin_db)
    total = merged(first, second)
    assert balances(db) == nonzero(total.expected)
    assert_checks_pass(db)
