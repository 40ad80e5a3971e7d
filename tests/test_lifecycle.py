"""How harnesses that start processes end on SIGTERM (workers.core.lifecycle)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.conftest import ROOT

# A harness in miniature: it starts a process, then waits; its finally block stops that process.
HARNESS = """
import signal, subprocess, sys
from workers.core.lifecycle import unwind_on_sigterm
unwind_on_sigterm()
started = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
try:
    print(started.pid, flush=True)
    signal.pause()
finally:
    started.terminate()
    started.wait()
    print("stopped what it started", flush=True)
"""


def test_sigterm_unwinds_so_a_harness_stops_what_it_started() -> None:
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert harness.stdout is not None
    started = int(harness.stdout.readline())
    harness.send_signal(signal.SIGTERM)
    rest, _ = harness.communicate(timeout=30)

    assert harness.returncode == 128 + signal.SIGTERM
    assert rest.strip() == "stopped what it started"
    try:
        os.kill(started, 0)
    except ProcessLookupError:
        pass  # gone: reaped by the harness
    else:
        raise AssertionError(f"process {started} outlived its harness")
