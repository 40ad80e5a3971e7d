"""py-spy on a running role: record for a while, then summarise where its CPU went."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^()]+?)(?::\d+)?\)$")


def _py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is missing: pip install -e '.[bench]'")
    return found


@contextmanager
def during(pid: int, out: Path, label: str) -> Iterator[dict[str, Any]]:
    """Profile ``pid`` while the block runs; the dict fills in with the summary at its end."""
    found: dict[str, Any] = {"role": label}
    spy = start(pid, 3600, out)
    try:
        yield found
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
        if out.exists():
            found.update(summarise(out))


@contextmanager
def maybe(on: bool, pid: int, tmp: Path, label: str) -> Iterator[dict[str, Any] | None]:
    """``during`` when ``on``, else nothing (and None for the figures)."""
    if not on:
        yield None
        return
    with during(pid, tmp / "profile.txt", label) as found:
        yield found


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` and its subprocesses without pausing them (--nonblocking), as raw stacks."""
    argv = [
        _py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "100",
        "--nonblocking",
        "--subprocesses",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str | None:
    """``function (file)`` without the line; None for what is not a Python frame."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return None
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def _ours(frame: str) -> bool:
    return "(workers/" in frame or "(flowpay_cli/" in frame


def summarise(raw: Path, top: int = 12) -> dict[str, Any]:
    """Where the CPU went: the top frames by own samples, and FlowPay's own functions by total
    samples (each with everything it calls)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        # The process name (first frame) may itself hold ';': keep only real frames.
        frames = [f for f in map(_short, stack.split(";")) if f is not None]
        if not frames or not count.isdigit():
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if _ours(frame):
                total[frame] += int(count)

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(100 * n / samples, 1)] for frame, n in counter.most_common(top)]

    return {"samples": samples, "own_percent": share(own), "flowpay_total_percent": share(total)}
