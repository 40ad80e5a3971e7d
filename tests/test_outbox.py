"""The outbox relay against real Kafka and PostgreSQL: delivery, order, concurrency, outages."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, env_for, override
from tests.helpers.db import Conn
from tests.helpers.kafka import headers_of, read_topic
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.events import Event, EventType, Initiated, Processing, encode, new_event
from workers.core.kafka import Message, TopicPartition, create_topics, make_consumer
from workers.core.outbox import EMITTING_SCHEMAS, stage
from workers.core.topics import topics
from workers.devstack import kafka
from workers.devstack.paths import StackPaths
from workers.outbox import store
from workers.outbox.publisher import NotAcknowledged
from workers.outbox.relay import FIRST_IDLE_WAIT_S, OutboxRelay, next_idle_wait
from workers.outbox.store import Pruned


def fast(settings: Settings, **outbox: Any) -> Settings:
    values = {"poll_interval_s": 0.2, "delivery_timeout_s": 5.0, **outbox}
    return override(settings, "outbox", **values)


def initiated(payment: str, n: int = 0) -> Event:
    return new_event(
        EventType.INITIATED,
        payment_id=payment,
        merchant_id="mer_1",
        data=Initiated(amount=100 + n, currency="USD", payment_method="pm_card_visa"),
        source="test",
    )


def processing(payment: str) -> Event:
    return new_event(
        EventType.PROCESSING,
        payment_id=payment,
        merchant_id="mer_1",
        data=Processing(),
        source="test",
    )


def interleaved(count: int, payments: int) -> list[Event]:
    return [initiated(f"pay_{n % payments}", n) for n in range(count)]


def stage_events(db: Conn, schema: str, events: list[Event]) -> None:
    with db.transaction(), db.cursor() as cursor:
        stage(cursor, schema, events)


def unpublished(db: Conn) -> int:
    return sum(
        _scalar(db, f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
        for schema in EMITTING_SCHEMAS
    )


def _scalar(db: Conn, query: str) -> int:
    row = db.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def topic_size(settings: Settings, topic: str) -> int:
    """Messages on ``topic``: the sum of its partitions' high watermarks."""
    consumer = make_consumer(settings, f"size-{uuid.uuid4().hex}", "operator")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in partitions]
    finally:
        consumer.close()
    return sum(high for _low, high in marks)


def read_all(settings: Settings) -> list[Message]:
    topic = topics(settings).payments
    size = topic_size(settings, topic)
    messages = read_topic(settings, topic, size)
    assert len(messages) == size
    return messages


def event_id(message: Message) -> str:
    return headers_of(message)["ce_id"]


def ids_by_key(messages: list[Message]) -> dict[bytes, list[str]]:
    by_key: dict[bytes, list[str]] = {}
    for message in messages:
        by_key.setdefault(message.key() or b"", []).append(event_id(message))
    return by_key


def expected_by_key(events: list[Event]) -> dict[bytes, list[str]]:
    by_key: dict[bytes, list[str]] = {}
    for e in events:
        by_key.setdefault(e.payment_id.encode(), []).append(str(e.event_id))
    return by_key


def first_seen(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


@contextmanager
def running(settings: Settings) -> Iterator[OutboxRelay]:
    """A relay running in a thread; stopped, and checked to have stopped, on exit."""
    relay = OutboxRelay(settings)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the relay did not stop"


def test_both_outboxes_reach_the_payments_topic_and_are_marked(
    settings: Settings, db: Conn
) -> None:
    from_api = [initiated("pay_a"), initiated("pay_b")]
    from_processor = [processing("pay_a"), processing("pay_b")]
    stage_events(db, "api", from_api)
    stage_events(db, "processor", from_processor)

    with OutboxRelay(settings) as relay:
        assert relay.publish_once() == 4

    messages = read_topic(settings, topics(settings).payments, 4)
    by_id = {event_id(m): m for m in messages}
    assert set(by_id) == {str(e.event_id) for e in from_api + from_processor}
    for e in from_api + from_processor:
        message, encoded = by_id[str(e.event_id)], encode(e)
        assert message.key() == e.payment_id.encode()
        assert message.value() == encoded.value
        assert headers_of(message) == {
            name: value.decode() for name, value in encoded.headers if isinstance(value, bytes)
        }
        assert headers_of(message)["ce_type"] == e.type.value
    assert unpublished(db) == 0


def test_events_of_one_payment_arrive_in_order(settings: Settings, db: Conn) -> None:
    settings = fast(settings, batch_size=30)
    sent = interleaved(200, payments=5)
    for start in range(0, 200, 50):
        stage_events(db, "api", sent[start : start + 50])

    with OutboxRelay(settings) as relay:
        while relay.publish_once():
            pass

    assert ids_by_key(read_topic(settings, topics(settings).payments, 200)) == expected_by_key(sent)
    assert unpublished(db) == 0


def test_two_relays_publish_each_event_once_and_in_order(settings: Settings, db: Conn) -> None:
    settings = fast(settings, batch_size=7)
    sent = interleaved(300, payments=6)
    with running(settings), running(settings):
        for start in range(0, 300, 10):
            stage_events(db, "api", sent[start : start + 10])
        wait_for(lambda: unpublished(db) == 0)

    messages = read_all(settings)
    assert len(messages) == 300
    assert sorted(event_id(m) for m in messages) == sorted(str(e.event_id) for e in sent)
    assert ids_by_key(messages) == expected_by_key(sent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_kafka(settings: Settings, base_settings: Settings) -> Iterator[Settings]:
    """The test's database and topic names, on a Kafka broker of the test's own."""
    home = ROOT / ".flowpay" / "test-stacks" / uuid.uuid4().hex
    own = override(
        settings,
        "dev",
        home=home,
        kafka_port=_free_port(),
        kafka_controller_port=_free_port(),
        kafka_home=StackPaths.of(base_settings).kafka_dir,
    )
    own = override(own, "kafka", bootstrap_servers=None)
    try:
        kafka.up(own)
        create_topics(own)
        yield own
    finally:
        kafka.down(own)
        shutil.rmtree(home, ignore_errors=True)


def test_kafka_outage_holds_events_and_the_relay_catches_up(own_kafka: Settings, db: Conn) -> None:
    settings = fast(own_kafka, delivery_timeout_s=1.0)
    before = interleaved(10, payments=3)
    stage_events(db, "api", before)
    kafka.down(settings)

    with running(settings) as relay:
        during = interleaved(10, payments=3)
        stage_events(db, "api", during[:5])  # intake keeps accepting: the rows just wait
        stage_events(db, "processor", during[5:])
        wait_for(lambda: relay.failures >= 2)
        assert unpublished(db) == 20

        kafka.up(settings)
        wait_for(lambda: unpublished(db) == 0, timeout_s=120)

    messages = read_all(settings)
    assert {event_id(m) for m in messages} == {str(e.event_id) for e in before + during}
    # Redelivery may repeat an event, but first appearances keep each payment's order.
    firsts = {key: first_seen(ids) for key, ids in ids_by_key(messages).items()}
    for one_outbox in (before + during[:5], during[5:]):
        for key, expected in expected_by_key(one_outbox).items():
            assert [i for i in firsts[key] if i in expected] == expected


def _start_relay(settings: Settings, log: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = env_for(settings) | {
        "FLOWPAY_OUTBOX__POLL_INTERVAL_S": "0.2",
        "FLOWPAY_WORKER__GRACE_PERIOD_S": "20",
        **env,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.outbox"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise
    assert process.returncode == 0, log.read_text()[-3000:]


def test_a_killed_relay_loses_nothing_once_restarted(
    settings: Settings, db: Conn, tmp_path: Path
) -> None:
    sent = interleaved(3000, payments=30)
    for start in range(0, 3000, 500):
        stage_events(db, "api", sent[start : start + 500])
    log = tmp_path / "relay.log"

    relay = _start_relay(settings, log, FLOWPAY_OUTBOX__BATCH_SIZE="50")
    try:
        wait_for(lambda: unpublished(db) <= 3000 - 50)
    finally:
        os.kill(relay.pid, signal.SIGKILL)
        relay.wait(30)

    relay = _start_relay(settings, log)
    try:
        wait_for(lambda: unpublished(db) == 0)
    finally:
        _stop(relay, log)
    assert {event_id(m) for m in read_all(settings)} == {str(e.event_id) for e in sent}


def test_sigterm_stops_the_relay_cleanly(settings: Settings, db: Conn, tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    relay = _start_relay(settings, log)
    try:
        stage_events(db, "api", [initiated("pay_term")])
        wait_for(lambda: unpublished(db) == 0)
    finally:
        _stop(relay, log)
    assert "outbox relay stopped" in log.read_text()


def test_an_idle_relay_still_publishes_what_comes_later(settings: Settings, db: Conn) -> None:
    first, second = initiated("pay_n", 1), initiated("pay_n", 2)
    with running(settings):
        stage_events(db, "api", [first])
        wait_for(lambda: unpublished(db) == 0, timeout_s=15)
        # Let it go idle: its waits between polls grow to the poll interval.
        time.sleep(1.0)
        stage_events(db, "processor", [second])
        messages = read_topic(settings, topics(settings).payments, 2, timeout_s=15)
    assert [event_id(m) for m in messages] == [str(first.event_id), str(second.event_id)]


def test_idle_waits_double_from_the_first_up_to_the_poll_interval() -> None:
    waits = [0.0]
    for _ in range(12):
        waits.append(next_idle_wait(waits[-1], 0.1))
    assert waits[1] == FIRST_IDLE_WAIT_S
    assert all(b == min(0.1, 2 * a) for a, b in itertools.pairwise(waits[1:]))
    assert waits[-1] == 0.1


def test_intake_commits_notify_no_one(db: Conn) -> None:
    # A NOTIFY serialises commits on PostgreSQL's notify lock; the outboxes must not send one.
    rows = db.execute(
        "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE c.relname = 'outbox' AND NOT t.tgisinternal"
    ).fetchall()
    assert rows == []


def _age(db: Conn, schema: str, event: Event, column: str) -> None:
    db.execute(
        f"UPDATE {schema}.outbox SET {column} = now() - interval '48 hours' WHERE event_id = %s",
        (event.event_id,),
    )


def _remaining(db: Conn, schema: str) -> set[str]:
    return {str(r[0]) for r in db.execute(f"SELECT event_id FROM {schema}.outbox")}


def _key(db: Conn, key: str, status: int | None, hours_old: int) -> None:
    db.execute(
        "INSERT INTO api.idempotency_keys (merchant_id, key, request_hash, response_status,"
        " created_at) VALUES ('mer_x', %s, '\\x00', %s, now() - make_interval(hours => %s))",
        (key, status, hours_old),
    )


def test_prune_removes_old_published_rows_and_completed_keys_only(
    settings: Settings, db: Conn
) -> None:
    settings = override(fast(settings, retention_hours=24.0), "api", idempotency_ttl_hours=24)
    old, recent, old_processor = initiated("pay_1"), initiated("pay_2"), processing("pay_1")
    stage_events(db, "api", [old, recent])
    stage_events(db, "processor", [old_processor])
    db.execute("INSERT INTO api.merchants (id, name) VALUES ('mer_x', 'X')")
    _key(db, "done-old", 201, hours_old=48)
    _key(db, "inflight-old", None, hours_old=48)
    _key(db, "done-recent", 201, hours_old=1)

    with OutboxRelay(settings) as relay:
        assert relay.publish_once() == 3
        waiting = initiated("pay_3")
        stage_events(db, "api", [waiting])
        _age(db, "api", old, "published_at")
        _age(db, "processor", old_processor, "published_at")
        _age(db, "api", waiting, "created_at")
        assert relay.prune() == Pruned(outbox_rows=2, idempotency_keys=1)

    assert _remaining(db, "api") == {str(recent.event_id), str(waiting.event_id)}
    assert _remaining(db, "processor") == set()
    keys = {r[0] for r in db.execute("SELECT key FROM api.idempotency_keys")}
    assert keys == {"inflight-old", "done-recent"}


def test_the_running_relay_prunes_on_its_own(settings: Settings, db: Conn) -> None:
    settings = fast(settings, retention_hours=24.0, prune_interval_s=0.2)
    events = [initiated("pay_1"), initiated("pay_2")]
    stage_events(db, "api", events)
    with running(settings):
        wait_for(lambda: unpublished(db) == 0)
        for e in events:
            _age(db, "api", e, "published_at")
        wait_for(lambda: _remaining(db, "api") == set())


def test_lost_database_connections_are_reopened(settings: Settings, db: Conn) -> None:
    settings = fast(settings)
    with running(settings) as relay:
        stage_events(db, "api", [initiated("pay_1")])
        wait_for(lambda: unpublished(db) == 0)
        # What a PostgreSQL restart does to the relay's connections, on this database only.
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        wait_for(lambda: relay.failures >= 1)
        after = processing("pay_1")
        stage_events(db, "processor", [after])
        wait_for(lambda: unpublished(db) == 0)
    assert str(after.event_id) in {event_id(m) for m in read_all(settings)}


def test_a_round_works_only_on_the_outboxes_with_rows_waiting(settings: Settings, db: Conn) -> None:
    assert store.waiting(db) == []
    stage_events(db, "processor", [processing("pay_1")])
    assert store.waiting(db) == ["processor"]
    stage_events(db, "api", [initiated("pay_2")])
    assert store.waiting(db) == ["api", "processor"]

    with OutboxRelay(fast(settings)) as relay:
        assert relay.publish_once() == 2
    assert store.waiting(db) == []


def test_a_round_commits_every_outbox_it_published_together(settings: Settings, db: Conn) -> None:
    # One transaction for the round's batches, whose one wait on Kafka covers them all: the
    # marks share the transaction's timestamp.
    stage_events(db, "api", [initiated("pay_1")])
    stage_events(db, "processor", [processing("pay_2")])
    with OutboxRelay(fast(settings)) as relay:
        assert relay.publish_once() == 2
    marks = db.execute(
        "SELECT (SELECT max(published_at) FROM api.outbox),"
        " (SELECT max(published_at) FROM processor.outbox)"
    ).fetchone()
    assert marks is not None
    assert marks[0] is not None
    assert marks[0] == marks[1]


def test_an_outbox_kafka_does_not_acknowledge_holds_back_no_other(
    settings: Settings, db: Conn
) -> None:
    stage_events(db, "api", [initiated("pay_1")])
    stuck = processing("pay_2")
    stage_events(db, "processor", [stuck])
    with OutboxRelay(fast(settings, delivery_timeout_s=1.0)) as relay:
        relay.topic_of["processor"] = f"{topics(settings).payments}.missing"  # never created
        with pytest.raises(NotAcknowledged):
            relay.publish_once()
    assert store.waiting(db) == ["processor"]  # the API's batch committed, this one did not
    assert _scalar(db, "SELECT count(*) FROM processor.outbox WHERE published_at IS NULL") == 1
    with OutboxRelay(fast(settings)) as relay:
        assert relay.publish_once() == 1  # the next round publishes it
    assert str(stuck.event_id) in {event_id(m) for m in read_all(settings)}
