"""A role's start-up connection: a database not up yet is waited for, a refusal is not."""

from __future__ import annotations

import logging
import selectors
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from chaos.receiver import running
from tests.conftest import override
from workers.core.config import Settings
from workers.core.db import connect_at_start, database_url, role_name
from workers.core.ports import free_port


class _Signal(logging.Handler):
    """Sets ``seen`` on the first warning that the start-up is waiting."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "not available yet" in record.getMessage():
            self.seen.set()


@contextmanager
def _signal() -> Iterator[_Signal]:
    signal = _Signal()
    logger = logging.getLogger("workers.core.db")
    logger.addHandler(signal)
    try:
        yield signal
    finally:
        logger.removeHandler(signal)


class _Forward(socketserver.BaseRequestHandler):
    """Pipes one client connection to the real server, both ways, until either side closes."""

    target: tuple[str, int]

    def handle(self) -> None:
        with socket.create_connection(self.target) as upstream, selectors.DefaultSelector() as sel:
            sel.register(self.request, selectors.EVENT_READ, upstream)
            sel.register(upstream, selectors.EVENT_READ, self.request)
            while True:
                for key, _ in sel.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)


@contextmanager
def _forwarder(port: int, target: tuple[str, int]) -> Iterator[None]:
    handler = type("Forward", (_Forward,), {"target": target})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    with running(server):
        yield


def _through(settings: Settings, port: int, **changes: str) -> Settings:
    url = make_conninfo(database_url(settings, "notifier"), host="127.0.0.1", port=str(port))
    return override(
        settings, "database", urls={"notifier": SecretStr(make_conninfo(url, **changes))}
    )


def test_a_database_not_up_yet_is_waited_for(settings: Settings) -> None:
    real = conninfo_to_dict(database_url(settings, "notifier"))
    target = (str(real.get("host") or "127.0.0.1"), int(real.get("port") or 5432))
    port = free_port()
    opened = threading.Event()

    def open_once_waiting(signal: _Signal) -> None:
        # Nothing listens on the port until the start-up has been refused and says it waits.
        if signal.seen.wait(30):
            with _forwarder(port, target):
                opened.set()
                done.wait(30)

    done = threading.Event()
    with _signal() as signal:
        later = threading.Thread(target=open_once_waiting, args=(signal,))
        later.start()
        try:
            with connect_at_start(_through(settings, port), "notifier", within_s=30) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (role_name("notifier"),)
        finally:
            done.set()
            later.join(30)
    assert signal.seen.is_set()
    assert opened.is_set()


def test_credentials_refused_fail_at_once(settings: Settings) -> None:
    real = conninfo_to_dict(database_url(settings, "notifier"))
    port = int(real.get("port") or 5432)
    with _signal() as signal, pytest.raises(psycopg.OperationalError):
        connect_at_start(_through(settings, port, user="flowpay_nobody"), "notifier")
    assert not signal.seen.is_set()
