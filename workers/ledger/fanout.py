"""Run one function over several parts at once, each in a process of its own, on every core.

Replay is bound by CPU (decoding and planning, ~40 us an event on one core, and about as much
in PostgreSQL): a process per group of partitions puts every core to work. Processes are
spawned, never forked (the parent holds Kafka and PostgreSQL connections); each reports
progress through a queue.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable
from typing import Any, Final, TypeVar

from workers.core.errors import FlowPayError

T = TypeVar("T")
Progress = Callable[[int], None]

_POLL_S: Final = 0.5  # how often the parent checks that no process died without a word


class PartFailed(FlowPayError):
    """A part failed in its process (the message names the part's exception)."""


def fan_out(target: Callable[[T, Progress], int], parts: list[T], progress: Progress) -> int:
    """``target(part, progress)`` for every part, each in a spawned process; the sum of what
    they return. The first failure stops the others and is raised as ``PartFailed``."""
    context = multiprocessing.get_context("spawn")
    reports: Any = context.Queue()
    processes = [
        context.Process(target=_run, args=(target, part, reports), daemon=True) for part in parts
    ]
    for process in processes:
        process.start()
    total, running = 0, len(processes)
    try:
        while running:
            try:
                kind, value = reports.get(timeout=_POLL_S)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in processes):
                    raise PartFailed("a replay process died") from None
                continue
            if kind == "progress":
                progress(value)
            elif kind == "done":
                total += value
                running -= 1
            else:
                raise PartFailed(value)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
    return total


def _run(target: Callable[[T, Progress], int], part: T, reports: Any) -> None:
    try:
        done = target(part, lambda n: reports.put(("progress", n)))
    except BaseException as exc:  # reported to the parent, which raises it
        reports.put(("failed", f"{type(exc).__name__}: {exc}"))
        return
    reports.put(("done", done))
