"""One writer thread with group commit: many requests' writes, one transaction, one COMMIT.

Under load most of a write's cost is the COMMIT and the hand-offs between the event loop and
the thread, so the thread takes every job waiting, runs them in one ``BEGIN IMMEDIATE``
transaction (each in a savepoint, so one job's failure undoes only its own writes), commits,
and then hands all the results back in one call. Nobody hears of a write before it committed.
Jobs run in the order they were queued and see the writes of the jobs before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from workers.gateway_sim.db import Q, connect

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
MAX_BATCH = 512


@dataclass
class _Queued:
    job: Job
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    result: Any = None
    error: BaseException | None = None


class Writer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="gateway-sim-writer", daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        """Finish every queued job, then end the thread."""
        if self._started:
            self._queue.put(None)
            self._thread.join()

    async def submit(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` inside the writer's transaction; its result once that has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Queued(job, future, loop))
        return cast(T, await future)

    def _run(self) -> None:
        conn = connect(self.path)
        try:
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._write(conn, batch)
                    _hand_back(batch)
        finally:
            conn.close()

    def _next_batch(self) -> list[_Queued] | None:
        """What is waiting (blocking for the first); None once told to stop and drained."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _write(self, conn: sqlite3.Connection, batch: list[_Queued]) -> None:
        try:
            conn.execute(Q["begin_immediate"])
            for item in batch:
                conn.execute(Q["savepoint"])
                try:
                    item.result = item.job(conn)
                except Exception as exc:
                    conn.execute(Q["rollback_to"])
                    item.error = exc
                conn.execute(Q["release"])
            conn.execute(Q["commit"])
        except Exception as exc:  # the transaction itself failed: nothing of it stands
            log.exception("gateway simulator write failed")
            if conn.in_transaction:
                conn.execute(Q["rollback"])
            for item in batch:
                item.error = exc


def _hand_back(batch: list[_Queued]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Queued]] = {}
    for item in batch:
        by_loop.setdefault(item.loop, []).append(item)
    for loop, items in by_loop.items():
        # A loop that has closed has nobody waiting on it any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[_Queued]) -> None:
    for item in items:
        if item.future.done():  # the request was cancelled; the write stands regardless
            continue
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            item.future.set_result(item.result)
