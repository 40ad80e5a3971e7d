"""The HTTP load generator (``bench/loadgen``, Go): built on first use, run as a child process.

A compiled client keeps the load generator's CPU small beside the API it measures; every run
reports the generator's own CPU share, so a reader can see it was not the bottleneck.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent / "loadgen"
BINARY = Path(__file__).resolve().parent / ".bin" / "loadgen"


def _go() -> str:
    found = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if Path(p).exists()), None
    )
    if found is not None:
        return found
    # As the dev stack installs PostgreSQL: from Debian's packages, as root.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "golang-go"]):
        subprocess.run(argv, env=env, check=True, capture_output=True)
    return "go"


def build() -> Path:
    """The load generator's binary, (re)built when its source is newer."""
    newest = max(p.stat().st_mtime for p in SOURCE.iterdir())
    if not BINARY.exists() or BINARY.stat().st_mtime < newest:
        BINARY.parent.mkdir(exist_ok=True)
        subprocess.run(
            [_go(), "build", "-o", str(BINARY), "."], cwd=SOURCE, check=True, capture_output=True
        )
    return BINARY


def run(
    url: str,
    api_key: str,
    *,
    seconds: float,
    concurrency: int = 1,
    rate: float = 0.0,
    count: int = 0,
    run_id: str = "lg",
) -> dict[str, Any]:
    """One load run; its summary, plus ``cpu_s`` and ``cpu_percent`` of the generator itself."""
    argv = [
        str(build()),
        f"-url={url}",
        f"-key={api_key}",
        f"-run={run_id}",
        f"-concurrency={concurrency}",
        f"-rate={rate}",
        f"-duration={seconds}s",
        f"-count={count}",
    ]
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
        # wait4 hands back the child's own resource usage: its CPU time, and no one else's.
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}): {text[-500:]}")
    summary: dict[str, Any] = json.loads(text)
    cpu = usage.ru_utime + usage.ru_stime
    summary["loadgen_cpu_s"] = round(cpu, 2)
    summary["loadgen_cpu_percent"] = round(100 * cpu / max(summary["seconds"], 1e-9), 1)
    return summary


def receiver(stack: ExitStack, port: int, secret: str) -> subprocess.Popen[bytes]:
    """The webhook receiver (``loadgen -serve``), answering on ``port`` until ``stack`` closes."""
    process = subprocess.Popen(
        [str(build()), f"-serve=127.0.0.1:{port}", f"-secret={secret}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(_stop, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    raise RuntimeError(f"the webhook receiver did not listen on {port}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)
