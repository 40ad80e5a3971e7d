"""Scenario 2, outbox relay: events/s moved from a pre-filled outbox to Kafka; baseline: the
same messages produced with the relay's producer settings, no database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench import profile
from bench.env import Bench, isolated, poll
from bench.events import initiated_many, produce_all
from workers.core.config import Settings
from workers.core.events import Event, encode
from workers.core.kafka import create_topics, make_producer
from workers.core.outbox import stage
from workers.core.topics import topics

UNPUBLISHED = "SELECT count(*) FROM api.outbox WHERE published_at IS NULL"


@dataclass(frozen=True)
class OutboxSizes:
    rows: int = 100_000
    timeout_s: float = 600.0
    profile: bool = True


def run(base: Settings, sizes: OutboxSizes) -> dict[str, Any]:
    with isolated(base, "outbox") as bench:
        events = initiated_many(sizes.rows + 1)
        baseline = raw_produce(bench, [encode(e) for e in events[1:]])
        relay = _relay(bench, events, sizes)
    return {
        "sizes": sizes.__dict__,
        "raw_produce": baseline,
        "relay": relay,
        "ratio_to_raw": round(relay["events_per_s"] / baseline["events_per_s"], 3),
    }


def raw_produce(bench: Bench, messages: list[Any]) -> dict[str, Any]:
    """The relay's producer (workers.outbox.publisher: make_producer + its delivery timeout)."""
    timeout_ms = int(bench.settings.outbox.delivery_timeout_s * 1000)
    producer = make_producer(bench.settings, "outbox", **{"message.timeout.ms": timeout_ms})
    topic = topics(bench.settings).payments + ".raw"
    create_topics(bench.settings, [topic])
    started = time.perf_counter()
    failed = produce_all(producer, topic, messages)
    seconds = time.perf_counter() - started
    return {
        "events": len(messages),
        "failed": failed,
        "seconds": round(seconds, 2),
        "events_per_s": round(len(messages) / seconds, 1),
    }


def _relay(bench: Bench, events: list[Event], sizes: OutboxSizes) -> dict[str, Any]:
    """Timed from the commit of the whole backlog to the relay publishing its last row."""
    relay = bench.start("outbox", ["run-outbox"])
    with bench.connect() as conn:
        # One row first: once it is published the relay is up, listening and idle.
        with conn.cursor() as cursor:
            stage(cursor, "api", events[:1])
        if not poll(lambda: bench.scalar(UNPUBLISHED) == 0, sizes.timeout_s, every_s=0.05):
            raise RuntimeError("the relay did not start publishing")
        with conn.transaction(), conn.cursor() as cursor:
            stage(cursor, "api", events[1:])
    with profile.maybe(sizes.profile, relay.pid, bench.tmp, "outbox") as profiled:
        began = time.perf_counter()
        poll(lambda: bench.scalar(UNPUBLISHED) == 0, sizes.timeout_s, every_s=0.05)
        seconds = time.perf_counter() - began
    left = int(bench.scalar(UNPUBLISHED))
    published = sizes.rows - left
    return {
        "events": published,
        "seconds": round(seconds, 2),
        "events_per_s": round(published / seconds, 1),
        "unpublished_at_end": left,
        "profile": profiled,
    }


def table(
    result: dict[str, Any], pgbench_tps: float | None
) -> tuple[str, list[str], list[list[Any]]]:
    relay, raw = result["relay"], result["raw_produce"]
    of_pg = f"{relay['events_per_s'] / pgbench_tps:.0%}" if pgbench_tps else "-"
    rows = [
        [
            "outbox relay",
            relay["events"],
            f"{relay['events_per_s']:.0f}",
            f"{result['ratio_to_raw']:.0%}",
            of_pg,
        ],
        [
            "raw produce, same producer (baseline)",
            raw["events"],
            f"{raw['events_per_s']:.0f}",
            "100%",
            "-",
        ],
    ]
    return "2. Outbox relay", ["path", "events", "events/s", "of raw", "of pgbench"], rows
