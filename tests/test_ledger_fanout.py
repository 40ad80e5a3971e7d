"""Replay rebuilds groups of partitions in parallel processes (workers.ledger.fanout)."""

from __future__ import annotations

import pytest

from tests.helpers.db import Conn
from tests.test_ledger_replay import build
from tests.test_ledger_support import mixed, quick, snapshot
from workers.core.config import Settings
from workers.ledger import replay
from workers.ledger.check import run_checks
from workers.ledger.fanout import PartFailed, Progress, fan_out
from workers.ledger.replay import Span, _groups


def _count(part: list[int], progress: Progress) -> int:
    for n in part:
        progress(n)
    return len(part)


def _fails_on_two(part: list[int], progress: Progress) -> int:
    if 2 in part:
        raise ValueError("part with 2 broke")
    return _count(part, progress)


def test_every_part_runs_and_reports_its_progress() -> None:
    seen: list[int] = []
    assert fan_out(_count, [[1, 2], [3], [4, 5, 6]], seen.append) == 6
    assert sorted(seen) == [1, 2, 3, 4, 5, 6]


def test_a_failing_part_fails_the_whole() -> None:
    with pytest.raises(PartFailed, match="ValueError: part with 2 broke"):
        fan_out(_fails_on_two, [[1], [2]], lambda _n: None)


def test_partitions_are_grouped_whole_and_balanced_by_messages() -> None:
    spans = [Span(p, 0, n) for p, n in enumerate([100, 10, 60, 50, 5, 40])]
    groups = _groups(spans, 2)
    assert sorted(s.partition for g in groups for s in g) == list(range(6))
    assert sorted(sum(s.count for s in g) for g in groups) == [125, 140]
    assert _groups(spans[:1], 2) == [[spans[0]]]


def test_a_parallel_replay_rebuilds_the_very_same_ledger(
    settings: Settings, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "PARALLEL_MIN", 0)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    settings = quick(settings)
    scenario = mixed(30)
    build(settings, db, scenario)
    before = snapshot(db)
    with replay.Replay(settings, from_offset=0) as job:
        job.prepare()
        assert len(replay._groups(job.spans, 3)) == 3
        assert job.rebuild() == len(scenario.events)
        assert all(r.ok for r in job.verify())
        job.swap()
    assert snapshot(db) == before, "same entries, balances and hash chain"
    assert all(r.ok for r in run_checks(db))
