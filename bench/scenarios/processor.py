"""Extra scenario (not in the default run): payments/s through the processor alone, from a
command topic pre-filled with the orchestrator's charge commands, with the gateway simulator
at a fixed latency. Timed from the first settled payment to the last, so start-up is left
out; so are its CPU time and PostgreSQL commits per payment, counted from the first
settlement on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.env import isolated, poll
from bench.events import charge_commands, produce_all
from bench.procstat import cpu_seconds
from tests.helpers.servers import free_port
from workers.core.config import Settings
from workers.core.kafka import make_producer
from workers.core.sql import load_queries
from workers.core.topics import topics

Q = load_queries("bench")


@dataclass(frozen=True)
class ProcessorSizes:
    payments: int = 5000
    latency_ms: int = 50
    max_in_flight: int = 256
    timeout_s: float = 600.0


def run(base: Settings, sizes: ProcessorSizes) -> dict[str, Any]:
    with isolated(base, "processor") as bench:
        topic = topics(bench.settings).commands
        producer = make_producer(bench.settings, "outbox")
        produce_all(producer, topic, charge_commands(sizes.payments))
        port = free_port()
        bench.start(
            "gateway-sim",
            [
                "serve-gateway-sim",
                "--port",
                str(port),
                "--db",
                str(bench.tmp / "sim.sqlite3"),
                "--latency-ms",
                str(sizes.latency_ms),
            ],
            health_url=f"http://127.0.0.1:{port}/healthz",
        )
        env = {
            "FLOWPAY_PROCESSOR__MAX_IN_FLIGHT": str(sizes.max_in_flight),
            "FLOWPAY_GATEWAY__URL": f"http://127.0.0.1:{port}",
        }
        pid = bench.start("processor", ["run-processor"], env=env).pid
        poll(lambda: bench.scalar(Q["settled"]) >= 1, sizes.timeout_s, every_s=0.05)
        first = (int(bench.scalar(Q["settled"])), cpu_seconds(pid), int(bench.scalar(Q["commits"])))
        poll(lambda: bench.scalar(Q["settled"]) >= sizes.payments, sizes.timeout_s)
        last = (int(bench.scalar(Q["settled"])), cpu_seconds(pid), int(bench.scalar(Q["commits"])))
        with bench.connect() as conn:
            row = conn.execute(Q["settled_span"]).fetchone()
    settled, seconds = (int(row[0]), float(row[1] or 0)) if row else (0, 0.0)
    return {
        "sizes": sizes.__dict__,
        "settled": settled,
        "seconds": round(seconds, 2),
        "payments_per_s": round(settled / seconds, 1) if seconds else 0.0,
        **_per_payment(first, last),
    }


def _per_payment(first: tuple[int, float, int], last: tuple[int, float, int]) -> dict[str, float]:
    """CPU ms and commits per payment settled between two readings (the bench's own polls are
    among the commits: a few a second)."""
    settled = max(1, last[0] - first[0])
    return {
        "cpu_ms_per_payment": round(1000 * (last[1] - first[1]) / settled, 3),
        "commits_per_payment": round((last[2] - first[2]) / settled, 2),
    }


def table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    sizes = result["sizes"]
    rows = [
        [
            result["settled"],
            f"{result['payments_per_s']:.0f}",
            sizes["latency_ms"],
            sizes["max_in_flight"],
            result.get("cpu_ms_per_payment", "-"),
            result.get("commits_per_payment", "-"),
        ]
    ]
    title = "Processor alone (extra)"
    columns = ["settled", "payments/s", "gateway latency ms", "max in flight",
               "CPU ms per payment", "commits per payment"]  # fmt: skip
    return title, columns, rows
