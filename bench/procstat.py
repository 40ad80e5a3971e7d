"""CPU time and peak memory of processes and their descendants, read from /proc."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workers.devstack.procs import named_stat, stat_fields

_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid``; none once it has exited (processes come and go meanwhile)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += children(current)
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``, of its live descendants and of the children it has reaped."""
    total = 0.0
    for index, member in enumerate(tree(pid)):
        fields = stat_fields(member)
        if not fields:
            continue
        # utime, stime, then cutime, cstime (reaped children; counted once, at the root).
        used = int(fields[11]) + int(fields[12])
        if index == 0:
            used += int(fields[13]) + int(fields[14])
        total += used / _TICKS
    return total


def threads_cpu_seconds(pid: int, prefixes: tuple[str, ...]) -> dict[str, tuple[float, int]]:
    """Per prefix: the CPU time of the live threads of ``pid``'s tree whose kernel name starts
    with it (``workers.core.threads`` names them), and how many there are. A thread counts
    once, under the first of ``prefixes`` its name starts with."""
    ticks = dict.fromkeys(prefixes, 0)
    found = dict.fromkeys(prefixes, 0)
    for member in tree(pid):
        try:
            tasks = [int(task.name) for task in Path(f"/proc/{member}/task").iterdir()]
        except OSError:
            continue
        for task in tasks:
            name, fields = named_stat(member, task)
            prefix = next((p for p in prefixes if name.startswith(p)), None)
            if prefix is not None and fields:
                ticks[prefix] += int(fields[11]) + int(fields[12])
                found[prefix] += 1
    return {prefix: (ticks[prefix] / _TICKS, found[prefix]) for prefix in prefixes}


def machine_jiffies() -> tuple[int, int]:
    """(all, idle) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # idle and iowait


def busy_between(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time in use between two ``machine_jiffies``."""
    total = after[0] - before[0]
    return 1 - (after[1] - before[1]) / total if total else 0.0


def peak_rss_mb(pid: int) -> float:
    """The largest resident set any process of the tree has had (VmHWM), in MB."""
    peak = 0
    for member in tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


@dataclass
class Usage:
    """CPU share (% of one core) and peak RSS per named process tree over one window."""

    cpu_percent: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@contextmanager
def watching(pids: dict[str, int], every_s: float = 0.5) -> Iterator[Usage]:
    """Measure ``pids`` (name -> root pid) while the block runs; the Usage fills in at its end."""
    usage = Usage()
    start = {name: cpu_seconds(pid) for name, pid in pids.items()}
    last = dict(start)
    stop = threading.Event()

    def sample() -> None:
        # CPU time of a tree that exits mid-window would vanish: keep its last reading.
        for name, pid in pids.items():
            last[name] = max(last[name], cpu_seconds(pid))
            usage.peak_rss_mb[name] = max(usage.peak_rss_mb.get(name, 0.0), peak_rss_mb(pid))

    def loop() -> None:
        while not stop.wait(every_s):
            sample()

    began = time.monotonic()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield usage
    finally:
        stop.set()
        thread.join()
        sample()
        usage.seconds = time.monotonic() - began
        usage.cpu_percent = {
            name: round(100 * (last[name] - start[name]) / usage.seconds, 1) for name in pids
        }
        usage.peak_rss_mb = {k: round(v, 1) for k, v in usage.peak_rss_mb.items()}
