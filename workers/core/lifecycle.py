"""Signal-driven graceful stop for long-running roles.

The first SIGTERM or SIGINT asks the role to drain: finish in-flight work, commit, close.
If draining outlasts the grace period, or a second signal arrives, the process exits at once;
that is safe because nothing is committed before its effect is durable.
"""

from __future__ import annotations

import ctypes
import functools
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


def unwind_on_sigterm() -> None:
    """SIGTERM ends the program as Ctrl-C would, by an exception (``SystemExit``, status 143):
    its ``finally`` and ``with`` blocks still stop what it started. For harnesses that run a
    stack of processes (the benchmark, the chaos scenario), not for roles, which drain."""
    signal.signal(signal.SIGTERM, _exit_by_exception)


def _exit_by_exception(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


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
    if parent is None or parent.pid is None:
        return
    try:
        signal_on_parent_death(signal.SIGTERM, parent.pid)
    except OSError as exc:
        log.warning("cannot ask to outlive no parent (errno %d)", exc.errno)


def signal_on_parent_death(signum: int, parent_pid: int) -> None:
    """Have the kernel send ``signum`` to this process when ``parent_pid``, its parent, dies.

    ``PR_SET_PDEATHSIG`` holds even when the parent is SIGKILLed and cannot stop its children.
    It watches the parent *thread* that forked this process, so the parent must fork from a
    thread that lives as long as it does (its main thread). Safe to call between fork and exec
    (a ``preexec_fn``): the setting survives exec. Raises OSError if the kernel refuses it.
    """
    if _libc().prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signum)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
