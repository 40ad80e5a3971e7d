"""The consumer engine as a process: SIGTERM drains, SIGKILL loses and doubles nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from typing import IO

import psycopg
import pytest

from tests.conftest import ROOT, env_for
from tests.helpers.db import Conn
from tests.helpers.engine import GROUP, amount, event
from tests.helpers.kafka import committed_total, produce_events
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.topics import topics

EXIT_FORCED = 3  # workers.core.lifecycle: the grace period ran out


class Worker:
    """``tests.helpers.recording_worker`` in a process of its own, its log in a file."""

    def __init__(self, settings: Settings, delay_s: float, *args: str, **env: str) -> None:
        environment = {**env_for(settings), "FLOWPAY_WORKER__GRACE_PERIOD_S": "20", **env}
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in finish
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.recording_worker", GROUP, str(delay_s), *args],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def finish(self, timeout_s: float = 60) -> tuple[int, str]:
        """Wait for it to exit (SIGKILL after ``timeout_s``); its exit code and log."""
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        self.log.close()
        return self.process.returncode, text[-3000:]


def count(db: Conn, query: str) -> int:
    try:
        row = db.execute(query).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def applied(db: Conn) -> int:
    return count(db, "SELECT count(*) FROM public.applied")


@pytest.fixture
def sent(settings: Settings) -> list[int]:
    """40 events of one payment key, published; their amounts."""
    events = [event(n) for n in range(40)]
    produce_events(settings, events, key=b"k")
    return [amount(e) for e in events]


def test_sigterm_drains_commits_what_was_done_and_exits_cleanly(
    settings: Settings, db: Conn, sent: list[int]
) -> None:
    worker = Worker(settings, 0.2, FLOWPAY_WORKER__BATCH_SIZE="1")
    wait_for(lambda: applied(db) >= 3)
    worker.process.send_signal(signal.SIGTERM)
    code, log = worker.finish()
    assert code == 0, log
    done = applied(db)
    assert done < len(sent), "the worker should have stopped before the end"
    assert committed_total(settings, GROUP, topics(settings).payments) == done


def test_sigkill_mid_batch_loses_nothing_and_applies_nothing_twice(
    settings: Settings, db: Conn, sent: list[int]
) -> None:
    worker = Worker(settings, 0.3, FLOWPAY_WORKER__BATCH_SIZE="5")
    wait_for(lambda: applied(db) >= 5)
    wait_for(lambda: count(db, "SELECT count(*) FROM public.deliveries") > applied(db))
    os.kill(worker.process.pid, signal.SIGKILL)  # a batch noted, its transaction open
    worker.finish()
    assert committed_total(settings, GROUP, topics(settings).payments) <= applied(db)

    worker = Worker(settings, 0.0)
    try:
        wait_for(lambda: applied(db) == len(sent))
    finally:
        worker.process.send_signal(signal.SIGTERM)
        code, log = worker.finish()
    assert code == 0, log
    assert count(db, "SELECT amount FROM public.total") == sum(sent), "each event counted once"
    redelivered = "SELECT count(*) FROM public.deliveries"
    assert count(db, redelivered) > len(sent), "the killed batch came again"
    assert committed_total(settings, GROUP, topics(settings).payments) == len(sent)


def test_sigterm_during_a_retry_backoff_stops_at_once_and_exits_cleanly(
    settings: Settings, db: Conn, sent: list[int]
) -> None:
    # Backoffs up to a minute, a grace period of 20 s: waiting one out would end in the forced
    # exit (code 3) at the end of the grace period.
    worker = Worker(settings, 0.0, "failing", FLOWPAY_WORKER__RETRY_MAX_BACKOFF_S="60")
    retried = "SELECT count(*) >= 2 * count(DISTINCT event_id) FROM public.deliveries"
    wait_for(lambda: count(db, retried) and count(db, "SELECT count(*) FROM public.deliveries"))
    worker.process.send_signal(signal.SIGTERM)
    code, log = worker.finish(timeout_s=10)
    assert code == 0, log
    assert committed_total(settings, GROUP, topics(settings).payments) == 0
