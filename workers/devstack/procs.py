"""Processes the stack starts: spawn detached, recognise by PID and command line, stop by PID.

Finding processes by what they hold (a listening port, an environment variable) goes through
psutil, which reads /proc and copes with processes ending mid-scan.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

# A listening port -> the PIDs holding it (None: a process this user may not look into).
Listeners = Mapping[int, set[int | None]]


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def alive(pid: int | None, marker: str) -> bool:
    """True when ``pid`` runs with ``marker`` in its command line (guards against PID reuse)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    line = _settled_cmdline(pid)
    return line is not None and marker in line


# A process's new command line shows in /proc only once exec has set up its memory, a moment
# after exec closed the pipe whose closing tells the parent the start succeeded.
_EXEC_SETTLE_S = 10.0
_PF_KTHREAD = 0x00200000  # from <linux/sched.h>: kernel threads have no command line


def _settled_cmdline(pid: int) -> str | None:
    """``pid``'s command line; None for a process that is gone or a zombie."""
    deadline = time.monotonic() + _EXEC_SETTLE_S
    while True:
        stat = stat_fields(pid)
        if not stat or stat[0] in ("Z", "X"):
            return None
        line = cmdline(pid)
        if line or int(stat[6]) & _PF_KTHREAD or time.monotonic() >= deadline:
            return line
        time.sleep(0.01)


def stat_fields(pid: int, task: int | None = None) -> list[str]:
    """The fields of /proc/<pid>/stat (or of one of its threads, /proc/<pid>/task/<task>/stat)
    after the command name (state, ppid, ..., flags, ..., utime, stime, cutime, cstime, ...);
    none once the process or thread is gone."""
    return named_stat(pid, task)[1]


def named_stat(pid: int, task: int | None = None) -> tuple[str, list[str]]:
    """The command name (a thread's own, as it gave it to the kernel) and ``stat_fields``;
    ("", []) once the process or thread is gone."""
    where = f"/proc/{pid}" if task is None else f"/proc/{pid}/task/{task}"
    try:
        stat = Path(f"{where}/stat").read_text()
    except OSError:
        return "", []
    # The command name may hold spaces and parentheses: it ends at the last closing one.
    head, _, rest = stat.rpartition(")")
    return head.partition("(")[2], rest.split()


def spawn(
    argv: Sequence[str],
    log_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: pwd.struct_passwd | None = None,
) -> int:
    """Start ``argv`` in its own session (as ``user``, if given), output appended to
    ``log_file``; returns its PID, which is also the session's and its process group's."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
    return process.pid


def terminate(pid: int, marker: str, timeout_s: float = 30.0) -> bool:
    """SIGTERM, wait, then SIGKILL. Returns True if the process was running."""
    if not alive(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, marker, timeout_s):
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, marker, 10)
    return True


def wait_gone(pid: int, marker: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid, marker):
            return True
        time.sleep(0.1)
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def how_ended(pid: int) -> str | None:
    """How ``pid`` ended ("exited with code 1", "was killed by SIGKILL"); None while it runs.

    Its exit status is known only to its parent: of a process this one did not start, only that
    it ended.
    """
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if alive(pid, "") else "ended"
    if waited == 0:
        return None
    code = os.waitstatus_to_exitcode(status)
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def listeners() -> dict[int, set[int | None]]:
    """Every TCP port something listens on (IPv4 or IPv6), with the PIDs that hold it."""
    held = _listeners()
    unresolved = [port for port, pids in held.items() if None in pids]
    if unresolved:
        # psutil reads every process's sockets, then the TCP table: a socket opened in between
        # has no PID yet. A second look finds it; a process this user may not look into, never.
        again = _listeners()
        held |= {port: again.get(port, set()) for port in unresolved}
    return held


def _listeners() -> dict[int, set[int | None]]:
    held: dict[int, set[int | None]] = {}
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr:
            held.setdefault(conn.laddr.port, set()).add(conn.pid)
    return held


def with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes (this one aside) whose environment sets ``name`` to ``value``."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(name) == value:
                found.append(process)
    return found


def env_of(pid: int, name: str) -> str | None:
    try:
        return psutil.Process(pid).environ().get(name)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it; empty when it is gone."""
    try:
        return {pid} | {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def describe(pid: int | None) -> str:
    """``pid 123 (its command line)``, for messages about a process that is not ours."""
    if pid is None:
        return "a process of another user"
    line = cmdline(pid).strip()
    return f"pid {pid} ({line[:80]})" if line else f"pid {pid}"


def stop_all(processes: Sequence[psutil.Process], timeout_s: float) -> None:
    """End ``processes``, SIGKILLing whatever still runs after ``timeout_s``.

    SIGTERM goes only to those whose parent is not among them: a parent stops its own children.
    """
    pids = {p.pid for p in processes}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.ppid() not in pids:
                process.terminate()
    left = _wait_ended(processes, timeout_s)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    _wait_ended(left, 5)


def _wait_ended(processes: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each has ended (a zombie has: only its parent's wait is missing); the rest."""
    deadline = time.monotonic() + timeout_s
    left = list(processes)
    while left:
        left = [p for p in left if not _ended(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return left


def _ended(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
