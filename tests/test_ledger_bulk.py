"""Replay loads its shadow in bulk (workers.ledger.bulk): checks suspended, then restored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.db import Conn
from tests.test_ledger_consumer import UnbalancedRefunds
from tests.test_ledger_replay import build
from tests.test_ledger_support import balances, mixed, nonzero, quick, snapshot
from workers.core.config import Settings
from workers.core.events import EventType
from workers.ledger import bulk
from workers.ledger.chain import GENESIS
from workers.ledger.check import run_checks
from workers.ledger.replay import Replay
from workers.ledger.store import queries

SCHEMA = "ledger_bulk_test"


def checks_of(db: Conn, schema: str) -> list[tuple[str, str, str, str]]:
    """What a load suspends of the schema, with its name taken out."""
    params = {"schema": schema, "unread": list(bulk.UNREAD_WHILE_LOADING)}
    rows = db.execute(queries(schema)["bulk_deferrable_checks"], params).fetchall()
    return [(k, t, n, d.replace(f"{schema}.", "<schema>.")) for k, t, n, d in rows]


def test_a_swapped_in_ledger_has_every_check_a_fresh_install_has(
    settings: Settings, db: Conn
) -> None:
    settings = quick(settings)
    scenario = mixed(12)
    build(settings, db, scenario)
    installed = checks_of(db, "ledger")
    assert {k for k, *_ in installed} == {"foreign key", "trigger", "unique", "index"}
    assert {n for _, _, n, _ in installed} >= set(bulk.UNREAD_WHILE_LOADING), "none renamed"
    with Replay(settings, from_offset=0) as job:
        job.prepare()
        assert checks_of(db, "ledger_shadow") == [], "suspended while the shadow loads"
        job.rebuild()
        assert checks_of(db, "ledger_shadow") == installed
        job.swap()
    assert checks_of(db, "ledger") == installed
    assert balances(db) == nonzero(scenario.expected)
    assert all(r.ok for r in run_checks(db))


def test_swap_restores_the_checks_even_without_a_rebuild(settings: Settings, db: Conn) -> None:
    settings = quick(settings)
    build(settings, db, mixed(6))
    installed = checks_of(db, "ledger")
    with Replay(settings, from_offset=10**9) as job:  # nothing to replay
        job.prepare()
        job.swap()
    assert checks_of(db, "ledger") == installed


def test_an_unbalanced_posting_is_not_applied_by_a_replay_as_by_run_ledger(
    settings: Settings, db: Conn
) -> None:
    """The balance triggers are suspended in the shadow: the bulk writer refuses it instead,
    with the same error, so the replay records it as not applied and the rest still posts."""
    settings = quick(settings)
    scenario = mixed(12)
    build(settings, db, scenario)
    refunds = [e for e in scenario.events if e.type is EventType.REFUNDED]
    with Replay(settings, from_offset=0, rules=UnbalancedRefunds()) as job:
        job.prepare()
        job.rebuild()
        assert all(r.ok for r in job.verify())
        not_applied = job.not_applied()
    assert len(refunds) > 0
    assert sorted(t for _, _, t, _ in not_applied) == ["CheckViolation"] * len(refunds) + [
        "MalformedEvent"
    ]
    assert all("does not balance" in e for _, _, t, e in not_applied if t == "CheckViolation")
    assert snapshot(db).events == len(scenario.events), "the live ledger is untouched"


@pytest.fixture
def loading(db: Conn) -> Iterator[list[bulk.Suspended]]:
    db.execute("SELECT public.ledger_install(%s)", (SCHEMA,))
    yield bulk.suspend(db, SCHEMA)
    db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def test_restoring_the_checks_refuses_rows_that_break_a_foreign_key(
    db: Conn, loading: list[bulk.Suspended]
) -> None:
    # A transaction whose event was never recorded: the suspended foreign key let it in.
    db.execute(
        f"INSERT INTO {SCHEMA}.transactions (id, kind, payment_id, merchant_id, event_id,"
        " source_topic, source_partition, source_offset, seq, prev_hash, hash)"
        " VALUES (%s, 'authorize', 'pay_1', 'mer_a', %s, 't', 0, 0, 1, %s, %s)",
        (uuid.uuid4(), uuid.uuid4(), GENESIS, GENESIS),
    )
    with pytest.raises(bulk.BulkLoadRefused, match="transactions_event_id_fkey"):
        bulk.restore(db, SCHEMA, loading)


def test_restoring_the_checks_refuses_rows_that_break_a_unique_index_dropped_for_the_load(
    db: Conn, loading: list[bulk.Suspended]
) -> None:
    # Two transactions at one position of a partition's hash chain: its index was not there.
    for offset in (0, 1):
        db.execute(
            f"INSERT INTO {SCHEMA}.transactions (id, kind, payment_id, merchant_id, event_id,"
            " source_topic, source_partition, source_offset, seq, prev_hash, hash)"
            " VALUES (%s, 'authorize', %s, 'mer_a', %s, 't', 0, %s, 1, %s, %s)",
            (uuid.uuid4(), f"pay_{offset}", uuid.uuid4(), offset, GENESIS, GENESIS),
        )
    with pytest.raises(bulk.BulkLoadRefused, match="transactions_chain_position"):
        bulk.restore(db, SCHEMA, loading)
