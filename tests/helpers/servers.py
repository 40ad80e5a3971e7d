"""Real servers for tests: `flowpay` roles started as subprocesses on free ports."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import psutil

from tests.conftest import ROOT
from workers.core import local_http
from workers.core.ports import free_port as free_port  # where tests have imported it from


@contextmanager
def running(
    args: list[str],
    env: dict[str, str],
    health_url: str | None = None,
    log_path: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``flowpay <args>`` until the block ends; wait for ``health_url`` to answer first.

    Its output goes to ``log_path`` (appended) when given, else to a temporary file.
    """
    # A file, not a pipe: a chatty server must never block on a full pipe.
    log: IO[bytes] = (
        log_path.open("ab")
        if log_path is not None
        else tempfile.NamedTemporaryFile(prefix="flowpay-test-", suffix=".log", delete=False)  # noqa: SIM115
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "flowpay_cli", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        if health_url is not None:
            _wait_healthy(process, health_url, Path(log.name))
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180  # a loaded machine starts Python slowly
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            if local_http.client().get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def server_processes(pid: int) -> set[int]:
    """The children of ``pid`` that multiprocessing spawned (not its resource tracker): the
    server processes of a ``serve-api --workers N`` running as ``pid``."""
    found: set[int] = set()
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return found  # exited meanwhile
    for child in children:
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found
