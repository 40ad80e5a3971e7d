"""Each API key's request rate: a token bucket held over every server process of one serve-api."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import env_for, flowpay
from tests.helpers.api import api_server, error_of
from tests.helpers.db import Conn
from tests.helpers.servers import server_processes
from workers.api.merchants import create_merchant
from workers.api.rate_limit import RateLimiter
from workers.api.shared_state import ENV, RATE_TABLE, SharedState, shared_for_server
from workers.core.config import Settings

KEY, OTHER = 12345, 67890
NOW = 1000.0
# Slow enough that the bucket of one process per server process would show: twice the burst.
PER_S, BURST = 2, 40


def _limiter(state: SharedState | None = None) -> RateLimiter:
    return RateLimiter((state or SharedState.private()).rates, per_s=PER_S, burst=BURST)


def test_a_key_gets_its_burst_then_its_rate_and_a_refusal_takes_nothing() -> None:
    limiter = _limiter()
    assert [limiter.take(KEY, now=NOW) for _ in range(BURST)] == [0.0] * BURST
    assert limiter.take(KEY, now=NOW) == pytest.approx(1 / PER_S)
    assert limiter.take(KEY, now=NOW + 0.2) == pytest.approx(1 / PER_S - 0.2)
    assert limiter.take(KEY, now=NOW + 1 / PER_S) == 0.0
    assert limiter.take(KEY, now=NOW + 1 / PER_S) > 0
    assert limiter.take(OTHER, now=NOW) == 0.0  # a bucket of its own


def test_a_bucket_refills_to_its_burst_and_no_more() -> None:
    limiter = _limiter()
    for _ in range(BURST):
        limiter.take(KEY, now=NOW)
    later = NOW + 3600
    assert sum(limiter.take(KEY, now=later) == 0 for _ in range(BURST * 2)) == BURST


def test_a_key_drawing_on_its_bucket_keeps_it_when_its_stripe_is_full() -> None:
    limiter = _limiter()
    same_stripe = [KEY + n * RATE_TABLE.stripes for n in range(RATE_TABLE.ways + 1)]
    drained, *others, newcomer = same_stripe
    for _ in range(BURST):
        limiter.take(drained, now=NOW)
    for key in others:
        limiter.take(key, now=NOW)
    assert limiter.take(newcomer, now=NOW) == 0.0  # took the slot of a fuller bucket
    assert limiter.take(drained, now=NOW) > 0  # still empty: not given up


def _take_all(path: str, now: float) -> int:
    """In another process: take every token there is from KEY's bucket."""
    limiter = _limiter(SharedState.open(Path(path)))
    return sum(limiter.take(KEY, now=now) == 0 for _ in range(BURST * 2))


def test_processes_that_share_the_state_share_each_bucket() -> None:
    with shared_for_server(2):
        path = os.environ[ENV]
        spawn = multiprocessing.get_context("spawn")  # as uvicorn starts server processes
        with ProcessPoolExecutor(1, mp_context=spawn) as other_process:
            took_there = other_process.submit(_take_all, path, NOW).result()
        here = _limiter(SharedState.open(Path(path)))
        took_here = sum(here.take(KEY, now=NOW + 5) == 0 for _ in range(BURST * 2))
    assert took_there == BURST
    assert took_here == 5 * PER_S  # what refilled since, not a bucket of its own


def _lock_and_die(path: str, stripe: int) -> None:
    """In another process: take a stripe's mutex and be killed holding it."""
    state = SharedState.open(Path(path))  # mapped until the end, as in a server process
    state.rates.lock(stripe)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_server_process_killed_holding_a_stripe_does_not_leave_it_locked() -> None:
    with shared_for_server(1):
        path = os.environ[ENV]
        killed = multiprocessing.get_context("spawn").Process(
            target=_lock_and_die, args=(path, KEY % RATE_TABLE.stripes)
        )
        killed.start()
        killed.join(60)
        assert killed.exitcode == -signal.SIGKILL
        limiter = _limiter(SharedState.open(Path(path)))
        took: list[float] = []
        # In a thread, so that a stripe left locked fails the test rather than hanging it.
        taker = threading.Thread(target=lambda: took.append(limiter.take(KEY, now=NOW)))
        taker.daemon = True
        taker.start()
        taker.join(30)
    assert took == [0.0]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def _send(url: str, key: str, count: int) -> list[httpx.Response]:
    """``count`` requests at once, each on a connection of its own (so every server process
    gets some), as fast as the server answers."""
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:
        return list(
            await asyncio.gather(
                *(c.get("/v1/payments", params={"limit": 1}) for _ in range(count))
            )
        )


async def _flood_beside(url: str, flooder: str, bystander: str) -> tuple[list[Any], list[Any]]:
    return await asyncio.gather(_send(url, flooder, BURST * 10), _send(url, bystander, 10))


def test_a_key_over_its_limit_gets_429s_across_server_processes_and_another_key_does_not(
    settings: Settings, db: Conn
) -> None:
    flooder, bystander = create_merchant(db, "Flooder"), create_merchant(db, "Bystander")
    env = {
        "FLOWPAY_API__RATE_LIMIT_PER_S": str(PER_S),
        "FLOWPAY_API__RATE_LIMIT_BURST": str(BURST),
        "FLOWPAY_API__READ_MODEL": "false",  # server processes idle but for requests
    }
    with api_server(settings, workers=2, env=env) as (url, parent):
        before = {pid: _cpu_ticks(pid) for pid in server_processes(parent.pid)}
        started = time.monotonic()
        flooded, bystanding = asyncio.run(_flood_beside(url, flooder.api_key, bystander.api_key))
        elapsed = time.monotonic() - started
        busy = {pid: _cpu_ticks(pid) - ticks for pid, ticks in before.items()}

    assert all(ticks > 0 for ticks in busy.values()), busy  # both server processes answered
    assert [r.status_code for r in bystanding] == [200] * 10
    refused = [r for r in flooded if r.status_code == 429]
    allowed = len(flooded) - len(refused)
    assert {r.status_code for r in flooded} == {200, 429}
    # The burst, and what refilled meanwhile: once, not once per server process.
    assert BURST <= allowed <= BURST + PER_S * elapsed + 1, (allowed, elapsed)
    for response in refused:
        assert error_of(response)["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1


def test_flowpay_pay_waits_out_the_rate_limit_and_gets_every_payment_accepted(
    settings: Settings, db: Conn
) -> None:
    merchant = create_merchant(db, "Patient")
    limits = {"FLOWPAY_API__RATE_LIMIT_PER_S": "5", "FLOWPAY_API__RATE_LIMIT_BURST": "5"}
    with api_server(settings, env={**limits, "FLOWPAY_API__READ_MODEL": "false"}) as (url, _):
        args = ["--amount", "1999", "--count", "15", "--concurrency", "5", "--json"]
        pay = ["pay", *args, "--url", url, "--api-key", merchant.api_key]
        done = flowpay(*pay, env={**env_for(settings), **limits})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert (summary["accepted"], summary["failed"]) == (15, 0), summary
    # Three times the burst at five a second: it waited, rather than hammering or giving up.
    assert summary["seconds"] >= 1.5, summary
