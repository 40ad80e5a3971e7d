"""Free TCP ports for servers that will be started a moment later (tests, chaos runs).

Port 0 would hand out a port from the kernel's ephemeral range, the very range outgoing
connections take their local ports from: between choosing it and the server binding it, a
client connection (to Kafka, to PostgreSQL) can take it, and the server fails with "address
already in use". These come from just below that range, where only explicit binds go.

Several processes choose ports at once (pytest-xdist workers, two checkouts' test runs), and a
port that is merely free now can be chosen by two of them before either binds it. So every
port handed out is also claimed in a registry shared by the machine's processes: a file per
port holding the PID of the process that took it, written under one lock. A claim lasts as
long as that process lives.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN: Final = 12_000
_REGISTRY: Final = Path(tempfile.gettempdir()) / "flowpay-ports"
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, that no live process was handed before."""
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (a cluster's nodes count up from one)."""
    low = _ephemeral_low()
    with _registry_locked():
        for _ in range(1_000):
            first = random.randrange(max(1024, low - _SPAN), low - count + 1)
            block = range(first, first + count)
            if all(p not in _handed_out and not _claimed(p) and _bindable(p) for p in block):
                for port in block:
                    _claim(port)
                    _handed_out.add(port)
                return first
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


@contextlib.contextmanager
def _registry_locked() -> Iterator[None]:
    _REGISTRY.mkdir(exist_ok=True)
    with (_REGISTRY / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _claimed(port: int) -> bool:
    """Another live process took this port (a claim by a dead one has lapsed)."""
    try:
        pid = int((_REGISTRY / str(port)).read_text())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(port: int) -> None:
    (_REGISTRY / str(port)).write_text(str(os.getpid()))


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
