"""Payments/s through the processor, with the gateway simulator at a fixed latency.

    python -m bench.processor --payments 5000 --latency-ms 50 --max-in-flight 256

Fills a fresh topic with ``payment.initiated`` events, then starts the simulator and the
processor as real processes and times how long until every payment is settled.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from workers.core.config import load_settings
from workers.core.db import database_url
from workers.core.events import EventType, Initiated, encode, new_event
from workers.core.kafka import create_topics, make_producer
from workers.core.topics import topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=5000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--max-in-flight", type=int, default=256)
    args = parser.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    os.environ["FLOWPAY_KAFKA__TOPIC_PREFIX"] = prefix
    settings = load_settings()
    create_topics(settings)
    ids = _fill(settings, args.payments)
    env = {
        **os.environ,
        "FLOWPAY_PROCESSOR__MAX_IN_FLIGHT": str(args.max_in_flight),
        "FLOWPAY_GATEWAY__URL": "http://127.0.0.1:18555",
    }
    with tempfile.TemporaryDirectory() as tmp:
        sim = _start(
            [
                "serve-gateway-sim",
                "--port",
                "18555",
                "--db",
                str(Path(tmp) / "sim.db"),
                "--latency-ms",
                str(args.latency_ms),
            ],
            env,
        )
        _wait_http("http://127.0.0.1:18555/healthz")
        started = time.perf_counter()
        processor = _start(["run-processor"], env)
        try:
            settled = _wait_settled(settings, ids)
            elapsed = time.perf_counter() - started
        finally:
            for process in (processor, sim):
                process.terminate()
                process.wait(30)
    print(
        f"{settled} payments settled in {elapsed:.1f}s: {settled / elapsed:.0f} payments/s "
        f"(simulator latency {args.latency_ms} ms, max_in_flight {args.max_in_flight}; "
        f"time includes the processor's start-up)"
    )


def _fill(settings: object, count: int) -> list[str]:
    producer = make_producer(settings, "bench")  # type: ignore[arg-type]
    ids = []
    for n in range(count):
        event = new_event(
            EventType.INITIATED,
            payment_id=f"pay_bench{n:07d}{uuid.uuid4().hex[:6]}",
            merchant_id="mer_bench",
            source="bench",
            data=Initiated(amount=1000 + n, currency="USD", payment_method="pm_card_visa"),
        )
        encoded = encode(event)
        producer.produce(
            topics(settings).payments, key=encoded.key, value=encoded.value, headers=encoded.headers
        )  # type: ignore[arg-type]
        producer.poll(0)
        ids.append(event.payment_id)
    producer.flush(60)
    return ids


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flowpay_cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_http(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)


def _wait_settled(settings: object, ids: list[str]) -> int:
    with psycopg.connect(database_url(settings), autocommit=True) as conn:  # type: ignore[arg-type]
        while True:
            row = conn.execute(
                "SELECT count(*) FROM processor.payments WHERE payment_id = ANY(%s)"
                " AND state IN ('succeeded', 'failed')",
                (ids,),
            ).fetchone()
            if row and row[0] >= len(ids):
                return len(ids)
            time.sleep(0.2)


if __name__ == "__main__":
    main()
