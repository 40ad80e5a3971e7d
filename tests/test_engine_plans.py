"""The engine's pure parts: which calls a batch makes, rounds, offsets to commit, declarations."""

from __future__ import annotations

import pytest

from tests.helpers.engine import Recorder, event, routes_to
from tests.helpers.messages import received
from workers.core.consuming import IGNORE, Batch, Received, Subscriber
from workers.core.consuming.routing import calls
from workers.core.consuming.tracker import OffsetTracker
from workers.ledger.consumer import Ledger


def items(*keys: str) -> list[Received]:
    """One event per key given, at offsets 0, 1, ... of partition 0."""
    return [received(0, n, event(n), key.encode()) for n, key in enumerate(keys)]


def offsets(batch: list[Received]) -> list[int]:
    return [item.offset for item in batch]


def test_one_handler_gets_the_whole_batch_in_one_call() -> None:
    batch = items("a", "b", "a", "c")
    assert [(h, offsets(b)) for h, b in calls(batch, lambda _i: "h")] == [("h", [0, 1, 2, 3])]


def test_a_key_going_to_two_handlers_gets_waves_that_keep_its_order() -> None:
    batch = items("a", "a", "b", "a", "b")
    handler = {0: "x", 1: "y", 2: "y", 3: "x", 4: "x"}
    planned = [(h, offsets(b)) for h, b in calls(batch, lambda i: handler[i.offset])]
    # a: x(0) y(1) x(3); b: y(2) x(4). Each key's events in order, one call per handler a wave.
    assert planned == [("x", [0]), ("y", [2]), ("y", [1]), ("x", [4]), ("x", [3])]
    for key in ("a", "b"):
        seen = [o for _h, offs in planned for o in offs if batch[o].key == key.encode()]
        assert seen == sorted(seen)


def test_rounds_hold_one_event_per_key_each_key_in_order() -> None:
    rounds = Batch(items("a", "b", "a", "a", "c", "b"), dead_letter=lambda _m, _e: None).rounds()
    assert [offsets(r) for r in rounds] == [[0, 1, 4], [2, 5], [3]]


def test_batch_ends_are_past_each_partitions_last_message() -> None:
    batch = [received(0, 7, event(1)), received(2, 3, event(2)), received(0, 9, event(3))]
    ends = Batch(batch, dead_letter=lambda _m, _e: None).ends
    assert ends == {("t.payments", 0): 10, ("t.payments", 2): 4}


def test_tracker_commits_below_the_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    part = ("t", 0)
    for offset in (10, 11, 12):
        tracker.started(part, offset)
    tracker.finished(part, 11)
    tracker.finished(part, 12)
    assert tracker.committable() == {part: 10}
    tracker.finished(part, 10)
    assert tracker.committable() == {part: 13}
    tracker.mark_committed({part: 13})
    assert tracker.committable() == {}
    tracker.forget([part])
    tracker.finished(part, 14)  # finished after a rebalance took the partition: no error
    assert tracker.committable() == {}


def test_stored_offsets_need_one_handler_one_batch_at_a_time_and_no_ignored_type() -> None:
    recorder = Recorder()
    ledger = Ledger.__new__(Ledger)  # only its type matters here: an OffsetStore
    routes = routes_to(Recorder.take)
    with pytest.raises(ValueError, match="one batch at a time"):
        Subscriber("g", "r", routes, recorder, store=ledger, max_in_flight=2, principal="operator")
    with pytest.raises(ValueError, match="only through the handler"):
        Subscriber(
            "g",
            "r",
            routes_to(Recorder.take, PROCESSING=IGNORE),
            recorder,
            store=ledger,
            principal="operator",
        )
    two = routes_to(Recorder.take, FAILED=lambda _handlers, _batch: None)
    with pytest.raises(ValueError, match="one handler"):
        Subscriber("g", "r", two, recorder, store=ledger, principal="operator")
    assert (
        Subscriber("g", "r", routes, recorder, store=ledger, principal="operator").store is ledger
    )
