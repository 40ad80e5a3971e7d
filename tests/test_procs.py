"""Recognising the stack's processes: from the moment they start, and how they ended."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import override
from workers.core.config import load_settings
from workers.devstack.health import NotReady, wait_ready
from workers.devstack.paths import StackPaths
from workers.devstack.procs import alive, how_ended


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("raise SystemExit(3)", "exited with code 3"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "was killed by SIGKILL"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", "was killed by SIGTERM"),
    ],
)
def test_the_parent_is_told_how_its_child_ended(code: str, said: str) -> None:
    child = _child(code)
    # Wait for the end without reaping it (which would take its status away).
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert how_ended(child.pid) == said
    child.returncode = 0  # reaped above: Popen must not wait for it again


def test_a_running_process_has_not_ended() -> None:
    child = _child("import sys; sys.stdin.read()")
    try:
        assert how_ended(child.pid) is None
    finally:
        child.kill()
        child.wait()


def test_of_a_process_another_started_only_its_running_is_known() -> None:
    assert how_ended(os.getppid()) is None


def test_a_process_is_recognised_the_moment_its_start_returns() -> None:
    # Popen returns once exec has begun, before the new command line shows in /proc: a look
    # at that moment must not take the new process for another (or for gone).
    for _ in range(1000):
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
        try:
            assert alive(child.pid, "sleep 30")
        finally:
            child.kill()
            child.wait()


def test_dev_up_says_how_its_supervisor_ended(tmp_path: Path) -> None:
    settings = override(load_settings(None), "dev", home=tmp_path)
    paths = StackPaths.of(settings)
    paths.logs.mkdir(parents=True)
    paths.supervisor_log.write_text("started\n")
    supervisor = _child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    os.waitid(os.P_PID, supervisor.pid, os.WEXITED | os.WNOWAIT)
    paths.supervisor_pid.write_text(f"{supervisor.pid}\n")

    with pytest.raises(NotReady, match=r"^the supervisor was killed by SIGKILL; last lines"):
        wait_ready(settings, 60, lambda _step: None)
    supervisor.returncode = -9  # reaped by wait_ready
