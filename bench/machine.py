"""What a result was measured on: the machine, the versions, the database's durability."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka

from bench.env import Bench
from workers.core.config import Settings

LIBRARIES = (
    "flowpay",
    "confluent-kafka",
    "kafka-python",
    "psycopg",
    "fastapi",
    "uvicorn",
    "pydantic",
    "httpx",
    "matplotlib",
    "py-spy",
)


SECTIONS = {"api", "kafka", "worker", "outbox", "gateway", "processor", "notifier"}


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe(bench: Bench, base: Settings) -> dict[str, Any]:
    with bench.connect() as conn:
        server = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    return {
        "machine": {
            "nproc": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "cpu": _cpu_model(),
            "kernel": platform.release(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "python": platform.python_version(),
            "postgresql": server[0] if server else None,
            "kafka": base.dev.kafka_version,
            "librdkafka": confluent_kafka.libversion()[0],
            **{name: _version(name) for name in LIBRARIES},
        },
        # What the roles ran with (secrets come out masked).
        "flowpay_settings": base.model_dump(mode="json", include=SECTIONS),
        "postgresql": {
            "synchronous_commit": sync[0] if sync else None,
            "fsync": fsync[0] if fsync else None,
        },
    }
