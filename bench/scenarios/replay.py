"""Scenario 4, replay: ledger rebuild events/s from the log of many payments' events;
baseline: reading the same topic with no processing."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench import profile
from bench.env import Bench, isolated
from bench.events import encode_all, lifecycles, produce_all
from workers.core.config import Settings
from workers.core.kafka import TopicPartition, make_consumer, make_producer, watermarks
from workers.core.topics import topics
from workers.ledger.replay import Replay


@dataclass(frozen=True)
class ReplaySizes:
    payments: int = 100_000
    profile: bool = True


def run(base: Settings, sizes: ReplaySizes) -> dict[str, Any]:
    with isolated(base, "replay") as bench:
        topic = topics(bench.settings).payments
        failed = produce_all(
            make_producer(bench.settings, "outbox"), topic, encode_all(lifecycles(sizes.payments))
        )
        baseline = raw_consume(bench, topic)
        rebuild = _rebuild(bench, sizes.profile)
    return {
        "sizes": sizes.__dict__,
        "produce_failed": failed,
        "raw_consume": baseline,
        "replay": rebuild,
        "ratio_to_raw": round(rebuild["events_per_s"] / baseline["events_per_s"], 3),
    }


def raw_consume(bench: Bench, topic: str) -> dict[str, Any]:
    """Every message of ``topic`` read once with the ledger's consumer settings, nothing done."""
    consumer = make_consumer(bench.settings, f"bench-raw-{uuid.uuid4().hex}", "operator")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: watermarks(consumer, topic, p)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        total, wanted = 0, sum(ends.values())
        started = time.perf_counter()
        while total < wanted:
            batch = consumer.consume(bench.settings.worker.batch_size, 1.0)
            total += sum(1 for m in batch if m.error() is None)
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return {
        "events": total,
        "seconds": round(seconds, 2),
        "events_per_s": round(total / seconds, 1),
    }


def _rebuild(bench: Bench, profiling: bool) -> dict[str, Any]:
    with Replay(bench.settings, from_offset=0) as replay:
        with profile.maybe(profiling, os.getpid(), bench.tmp, "replay (in the bench)") as profiled:
            started = time.perf_counter()
            replay.prepare()
            applied = replay.rebuild()
            seconds = time.perf_counter() - started
        checks = replay.verify()
    return {
        "events": replay.total,
        "applied": applied,
        "seconds": round(seconds, 2),
        "events_per_s": round(replay.total / seconds, 1),
        "checks_failed": [c.name for c in checks if not c.ok],
        "profile": profiled,
    }


def table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    replay, raw = result["replay"], result["raw_consume"]
    rows = [
        [
            "ledger replay (shadow rebuild)",
            replay["events"],
            f"{replay['events_per_s']:.0f}",
            f"{result['ratio_to_raw']:.0%}",
        ],
        [
            "raw consume, no processing (baseline)",
            raw["events"],
            f"{raw['events_per_s']:.0f}",
            "100%",
        ],
    ]
    return "4. Replay", ["path", "events", "events/s", "of raw"], rows
