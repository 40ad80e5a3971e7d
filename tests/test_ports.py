"""Ports for servers started later come from below the ephemeral range, free and distinct."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from workers.core.ports import free_port


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)  # where no outgoing connection lands
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


_HOLDER = """\
import random, sys
from workers.core import ports
random.seed(7)
print(ports.free_port(), flush=True)
sys.stdin.read()
"""


def test_a_port_another_live_process_took_is_not_handed_out_again() -> None:
    # Two pytest-xdist workers drawing the same candidate must not both get it.
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        taken = int(holder.stdout.readline())
        random.seed(7)  # this process now draws the same candidates, in the same order
        assert free_port() != taken
    finally:
        holder.communicate("")
