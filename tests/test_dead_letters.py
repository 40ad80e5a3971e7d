"""Bad messages on the payment and command topics: every worker dead-letters them and carries
on; `flowpay dlq`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import env_for, flowpay
from tests.helpers.db import Conn
from tests.helpers.kafka import committed_total, headers_of, produce_raw, read_topic
from tests.helpers.servers import free_port, running
from tests.helpers.waiting import wait_for
from workers.core import commands
from workers.core.commands import CommandType, Refund
from workers.core.config import Settings
from workers.core.events import EventType, RefundRequested, encode, new_event
from workers.core.kafka import make_producer
from workers.core.topics import GROUP_PROCESSOR_COMMANDS, topics

FAST = {"FLOWPAY_WORKER__POLL_TIMEOUT_S": "0.1", "FLOWPAY_WORKER__MAX_ATTEMPTS": "2"}
GROUPS = ("api", "processor", "notifier", "ledger", "orchestrator")


def _bad_messages(settings: Settings) -> list[bytes]:
    return _spoiled(encode(_good_event()).value, b"payment.refund_requested", b"not an event")


def _spoiled(good: bytes, type_: bytes, garbage: bytes) -> list[bytes]:
    """Garbage, an unknown type and a missing field, made from a good message."""
    unknown = good.replace(type_, b"payment.teleported")
    missing = json.dumps({k: v for k, v in json.loads(good).items() if k != "merchant_id"}).encode()
    return [b"\x00\xff" + garbage, unknown, missing]


def _good_command() -> commands.Command:
    return commands.new_command(
        CommandType.REFUND,
        command_id=uuid.uuid4(),
        saga_id="saga_dlq",
        subject="pay_dlq",
        merchant_id="mer_dlq",
        data=Refund(refund_id="re_dlq", amount=100),
        correlation_id="corr_dlq",
    )


def _good_event(n: str = "") -> Any:
    return new_event(
        EventType.REFUND_REQUESTED,
        payment_id=f"pay_dlq{n}",
        merchant_id="mer_dlq",
        data=RefundRequested(refund_id=f"re_dlq{n}", amount=100),
        source="test",
    )


@contextmanager
def _every_consumer(settings: Settings) -> Iterator[None]:
    """serve-api (the read model), run-processor, run-notifier, run-ledger and
    run-orchestrator, as processes."""
    env = {**env_for(settings), **FAST}
    port = free_port()
    with (
        running(
            ["serve-api", "--port", str(port)], env, health_url=f"http://127.0.0.1:{port}/healthz"
        ),
        running(["run-processor"], env),
        running(["run-notifier"], env),
        running(["run-ledger"], env),
        running(["run-orchestrator"], env),
    ):
        yield


def _handled_by_every_group(settings: Settings, db: Conn, event_ids: list[str], sent: int) -> bool:
    # The notifier and the processor pass over refund requests (no webhook; the processor waits
    # for the orchestrator's command), and what the read model does with one is no row of its
    # own: having committed past every message is what they show.
    for group in ("api", "notifier", "processor"):
        if committed_total(settings, group, topics(settings).payments) < sent:
            return False
    counts = [
        db.execute(
            f"SELECT count(*) FROM {schema}.events WHERE event_id::text = ANY(%s)", (event_ids,)
        ).fetchone()
        for schema in ("ledger", "orchestrator")
    ]
    return all(c == (len(event_ids),) for c in counts)


def _refused(db: Conn) -> Any:
    return db.execute(
        "SELECT failure_reason FROM processor.refunds WHERE refund_id = 're_dlq'"
    ).fetchone()


def test_every_worker_dead_letters_bad_messages_and_carries_on(
    settings: Settings, db: Conn
) -> None:
    names = topics(settings)
    bad = _bad_messages(settings)
    produce_raw(settings, names.payments, bad, key=b"pay_dlq")
    good = _good_event()
    encoded = encode(good)
    produce_raw(settings, names.payments, [encoded.value], key=encoded.key, headers=encoded.headers)
    command = commands.encode(_good_command())
    bad_commands = _spoiled(command.value, b"payment.refund", b"not a command")
    produce_raw(settings, names.commands, bad_commands, key=b"pay_dlq")
    produce_raw(settings, names.commands, [command.value], key=command.key, headers=command.headers)
    with _every_consumer(settings):
        # The good messages behind the bad ones reached every worker: the processor refused
        # the refund command (no such payment).
        wait_for(lambda: _handled_by_every_group(settings, db, [str(good.event_id)], 4))
        wait_for(lambda: _refused(db) == ("invalid_state",))
        dead = read_topic(settings, names.dead_letters, 3 * (len(GROUPS) + 1))
    by_group: dict[str, list[bytes | None]] = {}
    for message in dead:
        by_group.setdefault(headers_of(message)["dlq_group"], []).append(message.value())
    assert sorted(by_group) == sorted((*GROUPS, GROUP_PROCESSOR_COMMANDS))
    spoiled = by_group.pop(GROUP_PROCESSOR_COMMANDS)
    assert sorted(v or b"" for v in spoiled) == sorted(bad_commands)
    assert all(sorted(v or b"" for v in values) == sorted(bad) for values in by_group.values())
    kinds = {headers_of(m)["dlq_error_type"] for m in dead}
    assert kinds == {"MalformedEvent", "UnknownEventType", "MalformedCommand", "UnknownCommandType"}


def test_garbage_interleaved_with_a_load_of_good_events_stops_no_consumer(
    settings: Settings, db: Conn
) -> None:
    """Every fifth message is garbage, on 200 payments spread over every partition."""
    names = topics(settings)
    bad = _bad_messages(settings)
    producer = make_producer(settings, "operator")
    good_ids: list[str] = []
    garbage = 0
    for n in range(200):
        event = _good_event(str(n))
        encoded = encode(event)
        producer.produce(
            names.payments, value=encoded.value, key=encoded.key, headers=encoded.headers
        )
        good_ids.append(str(event.event_id))
        if n % 4 == 0:
            producer.produce(names.payments, value=bad[garbage % len(bad)], key=encoded.key)
            garbage += 1
    assert producer.flush(30) == 0
    with _every_consumer(settings):
        sent = len(good_ids) + garbage
        wait_for(lambda: _handled_by_every_group(settings, db, good_ids, sent), timeout_s=120)
        dead = read_topic(settings, names.dead_letters, garbage * len(GROUPS), timeout_s=60)
    assert len(dead) == garbage * len(GROUPS)
    per_group: dict[str, int] = {}
    for message in dead:
        group = headers_of(message)["dlq_group"]
        per_group[group] = per_group.get(group, 0) + 1
    assert per_group == dict.fromkeys(GROUPS, garbage)


def test_dlq_cli_lists_shows_and_replays_once(settings: Settings) -> None:
    names = topics(settings)
    original = b"\x00\xffnot an event"
    headers = [
        ("dlq_group", b"ledger"),
        ("dlq_topic", names.payments.encode()),
        ("dlq_partition", b"3"),
        ("dlq_offset", b"41"),
        ("dlq_error_type", b"MalformedEvent"),
        ("dlq_error_message", b"empty message value"),
        ("dlq_failed_at", b"2026-11-25T10:00:00+00:00"),
    ]
    produce_raw(settings, names.dead_letters, [original], key=b"pay_x", headers=headers)
    env = env_for(settings)
    listed = json.loads(flowpay("dlq", "list", "--group", "ledger", "--json", env=env).stdout)
    assert [(d["group"], d["source"], d["error_type"]) for d in listed] == [
        ("ledger", f"{names.payments}[3]@41", "MalformedEvent")
    ]
    assert json.loads(flowpay("dlq", "list", "--group", "api", "--json", env=env).stdout) == []
    letter = listed[0]["id"]
    shown = json.loads(flowpay("dlq", "show", letter, "--json", env=env).stdout)
    assert shown["key"] == "pay_x"
    assert shown["error"] == "empty message value"

    first = flowpay("dlq", "replay", letter, env=env)
    assert first.returncode == 0, first.stderr
    again = flowpay("dlq", "replay", letter, env=env)
    assert again.returncode == 2
    assert "replayed already" in again.stderr
    assert flowpay("dlq", "replay", letter, "--force", env=env).returncode == 0
    replayed = read_topic(settings, names.payments, 2)
    assert [m.value() for m in replayed] == [original, original]
    assert all(headers_of(m)["dlq_replay_of"] == f"{names.dead_letters}:{letter}" for m in replayed)
    assert all("dlq_group" not in headers_of(m) for m in replayed)
    assert flowpay("dlq", "show", "9:999", env=env).returncode == 2
