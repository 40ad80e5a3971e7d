"""Free TCP ports for servers that will be started a moment later (tests, chaos runs).

Port 0 would hand out a port from the kernel's ephemeral range, the very range outgoing
connections take their local ports from: between choosing it and the server binding it, a
client connection (to Kafka, to PostgreSQL) can take it, and the server fails with "address
already in use". These come from just below that range, where only explicit binds go.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Final

_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN: Final = 12_000
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never one this process handed out before."""
    low = _ephemeral_low()
    for _ in range(1_000):
        port = random.randrange(max(1024, low - _SPAN), low)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
