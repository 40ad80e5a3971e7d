"""Signal-driven graceful stop for long-running roles.

The first SIGTERM or SIGINT asks the role to drain: finish in-flight work, commit, close.
If draining outlasts the grace period, or a second signal arrives, the process exits at once;
that is safe because nothing is committed before its effect is durable.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

EXIT_FORCED = 3
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def install_stop_handlers(grace_period_s: float) -> threading.Event:
    """Return an event that is set on the first SIGTERM/SIGINT. Main thread only."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second signal %s: exiting now", signal.Signals(signum).name)
            os._exit(EXIT_FORCED)
        log.info("signal %s: draining (grace %.1fs)", signal.Signals(signum).name, grace_period_s)
        stop.set()
        timer = threading.Timer(grace_period_s, _grace_expired)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _grace_expired() -> None:
    log.warning("grace period over before the drain finished: exiting now")
    os._exit(EXIT_FORCED)


def exit_with_parent() -> None:
    """In a spawned child process: get SIGTERM when the parent dies, even by SIGKILL.

    A SIGKILLed ``serve-api`` parent cannot stop its server processes; orphaned, they would keep
    the port and the read model's consumer group membership while a restarted parent starts
    new ones. Does nothing in a process nobody spawned (``serve-api --workers 1``).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot ask to outlive no parent (errno %d)", ctypes.get_errno())
    if os.getppid() != parent.pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
