"""Ports for servers started later come from below the ephemeral range, free and distinct."""

from __future__ import annotations

import socket
from pathlib import Path

from workers.core.ports import free_port


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)  # where no outgoing connection lands
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))
