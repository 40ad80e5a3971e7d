"""The consumer engine on real Kafka, with offsets in Kafka: order, verdicts, commits, stops."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import override
from tests.helpers.engine import (
    GROUP,
    Recorder,
    amount,
    event,
    routes_to,
    run_until,
    running,
    subscriber,
)
from tests.helpers.kafka import committed_total, headers_of, produce_events, produce_raw, read_topic
from tests.helpers.waiting import wait_for
from workers.core import correlation
from workers.core.config import Settings
from workers.core.consuming import IGNORE, Batch, IncompleteRoutes, Routes, run
from workers.core.errors import PermanentError, TransientError
from workers.core.events import Event, EventType, Processing, encode, new_event
from workers.core.kafka import Message, TopicPartition, commit_offsets, make_consumer
from workers.core.topics import topics


def quick(settings: Settings, **worker: Any) -> Settings:
    values = {"max_attempts": 2, "retry_max_backoff_s": 0.2, "poll_timeout_s": 0.2, **worker}
    return override(settings, "worker", **values)


def test_handles_every_message_and_commits_them(settings: Settings) -> None:
    settings = quick(settings)
    sent = [event(n) for n in range(20)]
    produce_events(settings, sent)
    recorder = Recorder()
    run_until(settings, subscriber(recorder), lambda: len(recorder.events) == 20)
    assert {e.event_id for e in recorder.events} == {e.event_id for e in sent}
    assert committed_total(settings, GROUP, topics(settings).payments) == 20


def test_a_long_poll_timeout_holds_back_neither_waiting_messages_nor_a_stop(
    settings: Settings,
) -> None:
    # A batch of 500 and a poll timeout far beyond the test's deadline: an engine that waited
    # for a full batch or its whole timeout would neither hand these over nor stop in time.
    settings = override(settings, "worker", batch_size=500, poll_timeout_s=600)
    sent = [event(n) for n in range(3)]
    produce_events(settings, sent, key=b"k")
    recorder = Recorder()
    run_until(settings, subscriber(recorder), lambda: len(recorder.events) == 3)
    assert recorder.events == sent
    assert committed_total(settings, GROUP, topics(settings).payments) == 3


def test_a_poll_batch_reaches_its_handler_at_once_in_offset_order_per_partition(
    settings: Settings,
) -> None:
    settings = quick(settings)
    sent = [event(n, payment=f"pay_{n % 9}") for n in range(60)]
    produce_events(settings, sent)
    recorder = Recorder()
    run_until(settings, subscriber(recorder), lambda: len(recorder.events) == 60)
    assert any(len(call) > 1 for call in recorder.calls), "a poll batch in one call"
    seen: dict[tuple[str, int], list[int]] = {}
    for call in recorder.calls:
        for item in call:
            seen.setdefault(item.partition, []).append(item.offset)
    assert all(offsets == sorted(set(offsets)) for offsets in seen.values()), seen
    for n in range(9):  # and so in order per payment
        mine = [amount(e) for e in recorder.events if e.payment_id == f"pay_{n}"]
        assert mine == sorted(mine)


def test_a_poison_message_is_dead_lettered_and_the_rest_of_its_batch_done_once(
    settings: Settings,
) -> None:
    settings = quick(settings, batch_size=50)
    names = topics(settings)
    sent = [event(n) for n in range(8)]
    produce_events(settings, sent[:4], key=b"k")
    produce_raw(settings, names.payments, [b"\x00garbage"], key=b"k")
    produce_events(settings, sent[4:], key=b"k")
    poison = sent[5]

    def refuse_the_poison(events: list[Event]) -> None:
        if poison in events:
            raise ValueError("a bug this event meets")

    recorder = Recorder(fail=refuse_the_poison)
    payments = names.payments
    run_until(
        settings,
        subscriber(recorder),
        lambda: len(recorder.events) == 7 and committed_total(settings, GROUP, payments) == 9,
    )
    assert sorted(amount(e) for e in recorder.events) == [amount(e) for e in sent if e != poison]
    dead = read_topic(settings, names.dead_letters, 2)
    assert sorted(headers_of(m)["dlq_error_type"] for m in dead) == ["MalformedEvent", "ValueError"]
    [bug] = [m for m in dead if headers_of(m)["dlq_error_type"] == "ValueError"]
    assert bug.value() == encode(poison).value


def test_bad_messages_are_dead_lettered_and_good_ones_behind_them_handled(
    settings: Settings,
) -> None:
    settings = quick(settings)
    names = topics(settings)
    unknown = encode(event(1)).value.replace(b"payment.initiated", b"payment.vanished")
    missing = encode(event(2)).value.replace(b'"payment_method":"pm_card_visa"', b"")
    produce_raw(settings, names.payments, [b"\x00garbage", unknown, missing], key=b"same")
    good = event(3)
    produce_events(settings, [good], key=b"same")  # same partition, behind the bad ones
    recorder = Recorder()
    run_until(
        settings,
        subscriber(recorder),
        lambda: committed_total(settings, GROUP, names.payments) == 4,
    )
    assert recorder.events == [good]
    dead = read_topic(settings, names.dead_letters, 3)
    assert sorted(m.value() or b"" for m in dead) == sorted([b"\x00garbage", unknown, missing])
    kinds = sorted(headers_of(m)["dlq_error_type"] for m in dead)
    assert kinds == ["MalformedEvent", "MalformedEvent", "UnknownEventType"]
    first = headers_of(dead[0])
    assert first["dlq_group"] == GROUP
    assert first["dlq_topic"] == names.payments
    assert int(first["dlq_offset"]) >= 0
    assert all(m.key() == b"same" for m in dead)


def test_transient_errors_are_retried_never_dead_lettered(settings: Settings) -> None:
    settings = quick(settings)
    produce_events(settings, [event(1)])
    calls: list[int] = []

    def flaky(_events: list[Event]) -> None:
        calls.append(1)
        if len(calls) < 5:  # more than max_attempts: transient errors have no attempt limit
            raise TransientError("database briefly away")

    recorder = Recorder(fail=flaky)
    run_until(settings, subscriber(recorder), lambda: len(recorder.events) == 1)
    assert len(calls) == 5
    assert read_topic(settings, topics(settings).dead_letters, 1, timeout_s=2) == []
    assert committed_total(settings, GROUP, topics(settings).payments) == 1


def test_permanent_and_repeated_errors_are_dead_lettered(settings: Settings) -> None:
    settings = quick(settings, batch_size=1)  # each event alone from the start
    produce_events(settings, [event(1), event(2), event(3)], key=b"k")
    tries: dict[int, int] = {}

    def refuse(events: list[Event]) -> None:
        for e in events:
            tries[amount(e)] = tries.get(amount(e), 0) + 1
        if any(amount(e) == 101 for e in events):
            raise PermanentError("refused for good")
        if any(amount(e) == 102 for e in events):
            raise ValueError("a bug")

    recorder = Recorder(fail=refuse)
    run_until(
        settings,
        subscriber(recorder),
        lambda: committed_total(settings, GROUP, topics(settings).payments) == 3,
    )
    assert [amount(e) for e in recorder.events] == [103]
    dead = read_topic(settings, topics(settings).dead_letters, 2)
    assert [headers_of(m)["dlq_error_type"] for m in dead] == ["PermanentError", "ValueError"]
    assert "a bug" in headers_of(dead[1])["dlq_error_message"]
    assert tries == {101: 1, 102: 2, 103: 1}  # the bug: worker.max_attempts times


class Crash(BaseException):
    """Stands for the process dying inside the handler."""


def test_offsets_are_committed_only_for_finished_messages(settings: Settings) -> None:
    settings = quick(settings, batch_size=1)  # one event per call
    sent = [event(n) for n in range(5)]
    produce_events(settings, sent, key=b"k")

    def dies_on_the_third(events: list[Event]) -> None:
        if events[0] == sent[2]:
            raise Crash

    recorder = Recorder(fail=dies_on_the_third)
    with pytest.raises(Crash):
        run(settings, subscriber(recorder), threading.Event())
    assert recorder.events == sent[:2]
    assert committed_total(settings, GROUP, topics(settings).payments) == 2

    rest = Recorder()
    run_until(settings, subscriber(rest), lambda: len(rest.events) == 3)
    assert rest.events == sent[2:]


def test_ignored_types_never_reach_a_handler_and_their_offsets_advance(
    settings: Settings,
) -> None:
    settings = quick(settings)
    names = topics(settings)
    started = [event(n) for n in range(3)]
    processing = [
        new_event(EventType.PROCESSING, payment_id=e.payment_id, merchant_id="mer_1",
                  data=Processing(), source="test")
        for e in started
    ]  # fmt: skip
    interleaved = [e for pair in zip(started, processing, strict=True) for e in pair]
    produce_events(settings, interleaved, key=b"k")
    # A body that would not decode, under an ignored type's header: passed over undecoded.
    headers = [("ce_type", b"payment.processing")]
    produce_raw(settings, names.payments, [b"\x00not read"], key=b"k", headers=headers)
    recorder = Recorder()
    routes = routes_to(Recorder.take, PROCESSING=IGNORE)
    run_until(
        settings,
        subscriber(recorder, routes),
        lambda: committed_total(settings, GROUP, names.payments) == 7,
    )
    assert recorder.events == started
    assert read_topic(settings, names.dead_letters, 1, timeout_s=2) == []


def test_events_of_one_key_going_to_two_handlers_reach_them_in_order(settings: Settings) -> None:
    settings = quick(settings)
    order: list[tuple[str, EventType]] = []
    lock = threading.Lock()

    class TwoHandlers(Recorder):
        def started(self, batch: Batch) -> None:
            with lock:
                order.extend((e.payment_id, e.type) for e in batch.events)

        def moving(self, batch: Batch) -> None:
            time.sleep(0.05)  # slower: a wrong order would show
            with lock:
                order.extend((e.payment_id, e.type) for e in batch.events)

    sent: list[Event] = []
    for n in range(5):
        first = event(n)
        later = [
            new_event(EventType.PROCESSING, payment_id=first.payment_id, merchant_id="mer_1",
                      data=Processing(), source="test")
            for _ in range(2)
        ]  # fmt: skip
        sent += [first, later[0], event(n + 10, payment=first.payment_id), later[1]]
    produce_events(settings, sent)
    routes = routes_to(IGNORE, INITIATED=TwoHandlers.started, PROCESSING=TwoHandlers.moving)
    run_until(settings, subscriber(TwoHandlers(), routes), lambda: len(order) == len(sent))
    for n in range(5):
        mine = [t for pid, t in order if pid == f"pay_{n}"]
        assert mine == [e.type for e in sent if e.payment_id == f"pay_{n}"]


def test_a_second_consumer_joining_loses_nothing(settings: Settings) -> None:
    settings = quick(settings, batch_size=5)
    names = topics(settings)
    first = [event(n, payment=f"pay_{n % 12}") for n in range(60)]
    second = [event(n, payment=f"pay_{n % 12}") for n in range(60, 120)]
    produce_events(settings, first)
    one, two = Recorder(), Recorder()
    with running(settings, subscriber(one)):
        wait_for(lambda: len(one.events) > 10, what="the first consumer to start")
        with running(settings, subscriber(two)):
            wait_for(lambda: len(two.calls) > 0 or len(one.events) >= 60, what="a rebalance")
            produce_events(settings, second)
            everything = {e.event_id for e in first + second}
            wait_for(
                lambda: everything <= {e.event_id for e in one.events + two.events},
                what="every event handled by one of them",
            )
    wait_for(lambda: committed_total(settings, GROUP, names.payments) == 120)


def test_a_commit_that_cannot_happen_is_reported_not_raised(settings: Settings) -> None:
    # A static member replaced by a newer one with the same instance id is fenced: its commits
    # fail for good, as after a broker restart they fail for a while (found by the chaos
    # scenario: a failed commit killed the API's read model thread). Neither may end the loop.
    name = topics(settings).payments
    produce_raw(settings, name, [b"x"])
    static = {"group.instance.id": "the-one"}
    fenced = make_consumer(settings, "fencing", "operator", **static)
    fenced.subscribe([name])
    assert read_from(fenced, 1)
    newer = make_consumer(settings, "fencing", "operator", **static)
    newer.subscribe([name])
    try:
        assert read_from(newer, 1)
        assert not commit_offsets(fenced, [TopicPartition(name, 0, 1)], role="test", timeout_s=5)
        assert commit_offsets(newer, [TopicPartition(name, 0, 1)], role="test")
    finally:
        newer.close()
        fenced.close()


def read_from(consumer: Any, count: int, timeout_s: float = 30) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(m for m in consumer.consume(count, 0.5) if m.error() is None)
    return got


def test_an_incomplete_routing_table_is_refused_at_construction() -> None:
    table = {t: Recorder.take for t in EventType if t is not EventType.CHARGE_REVERSED}
    with pytest.raises(IncompleteRoutes, match=r"payment\.charge_reversed"):
        Routes("half-decided", table)


class Lines(logging.Handler):
    """Every line with the ids bound when it was written (as the role's formatter sees them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str, dict[str, str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {**correlation.current()}
        fields.update({k: str(v) for k in correlation.FIELDS if (v := record.__dict__.get(k))})
        self.lines.append((record.levelno, record.getMessage(), fields))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_batch_is_one_line_at_info_each_event_one_at_debug_a_dead_letter_one_at_error(
    settings: Settings, lines: Lines
) -> None:
    settings = quick(settings)
    sent = [event(n) for n in range(3)]
    produce_events(settings, sent, key=b"k")
    poison = event(9)
    produce_events(settings, [poison], key=b"k")

    def refuse(events: list[Event]) -> None:
        if poison in events:
            raise PermanentError("not this one")

    run_until(
        settings,
        subscriber(Recorder(fail=refuse)),
        lambda: committed_total(settings, GROUP, topics(settings).payments) == 4,
    )
    info = [m for level, m, _f in lines.lines if level == logging.INFO and m.startswith("test ok")]
    assert info, "a line per batch"
    assert all(
        re.fullmatch(r"test ok: \d+ events?, \S+\[\d+\]@\d+(-\d+)?, [\d.]+ ms", m) for m in info
    )
    per_event = {
        f.get("payment_id")
        for level, m, f in lines.lines
        if level == logging.DEBUG and m == "test ok payment.initiated"
    }
    assert per_event == {e.payment_id for e in sent}
    [dead] = [f for level, m, f in lines.lines if level == logging.ERROR and "dead-lettering" in m]
    assert dead["payment_id"] == poison.payment_id
