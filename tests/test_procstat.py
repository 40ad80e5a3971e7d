"""The bench's reading of CPU time from /proc: threads' own, found by the name they gave the OS."""

from __future__ import annotations

import os
import threading
import time

from bench.procstat import cpu_seconds, threads_cpu_seconds
from workers.core.threads import name_native

BUSY_S = 0.3
# Longer than the kernel keeps (15 bytes): the name is cut, and its start still finds it.
NAME = "procstat-test-burner"


def test_the_cpu_of_named_threads_is_found_by_their_name() -> None:
    burned, hold = threading.Event(), threading.Event()

    def burn_then_hold() -> None:
        name_native()
        while time.thread_time() < BUSY_S:
            pass
        burned.set()
        hold.wait()  # the bench reads live threads

    thread = threading.Thread(target=burn_then_hold, name=NAME)
    thread.start()
    try:
        burned.wait()
        by_prefix = threads_cpu_seconds(os.getpid(), (NAME[:12], "no-such-thread"))
        found, threads = by_prefix[NAME[:12]]
        assert threads == 1
        # The kernel's per-thread figure moves in clock ticks: a few of them either way.
        assert BUSY_S - 0.05 <= found <= BUSY_S + 0.05
        assert found <= cpu_seconds(os.getpid())
        assert by_prefix["no-such-thread"] == (0, 0)
    finally:
        hold.set()
        thread.join()
