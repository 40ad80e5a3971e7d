"""Open event streams per API key, capped over every server process of one serve-api; a stream
counts until it ends, and the streams of a killed server process stop counting."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.api import CARD, Api, api_server, error_of
from tests.helpers.db import Conn
from tests.helpers.servers import server_processes
from tests.helpers.waiting import wait_for
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.config import Settings

PER_KEY = 3


class Stream:
    """One open event stream, on a connection of its own."""

    def __init__(self, url: str, key: str, payment_id: str) -> None:
        self._http = httpx.Client(base_url=url, timeout=30, verify=local_http.tls_context())
        request = self._http.build_request(
            "GET", f"/v1/payments/{payment_id}/events", headers={"Authorization": f"Bearer {key}"}
        )
        self.response = self._http.send(request, stream=True)
        if self.response.status_code == 200:
            # Kept: when the line iterator goes, httpx closes the connection.
            self._lines = self.response.iter_lines()
            while next(self._lines):  # the first event: the stream is up
                pass
        else:
            self.response.read()
            self.close()  # refused: no connection left open

    def close(self) -> None:
        self.response.close()
        self._http.close()


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, int]]:
    """serve-api with two server processes; its URL and its parent's pid."""
    env = {"FLOWPAY_API__MAX_STREAMS_PER_KEY": str(PER_KEY)}
    with api_server(settings, workers=2, env=env) as (url, parent):
        yield url, parent.pid


@pytest.fixture
def api(server: tuple[str, int], db: Conn) -> Api:
    merchant, other = create_merchant(db, "Streamer"), create_merchant(db, "Other")
    return Api(server[0], merchant.api_key, merchant.id, other.api_key)


@contextmanager
def streams() -> Iterator[list[Stream]]:
    opened: list[Stream] = []

    def close_all() -> None:
        for s in opened:
            s.close()

    with ExitStack() as stack:
        stack.callback(close_all)
        yield opened


def _open(api: Api, opened: list[Stream], key: str | None = None) -> Stream:
    # Not kept alive: the only connections to the server are the streams (counted below).
    payment = api.pay(CARD, key=key, Connection="close").json()["id"]
    stream = Stream(api.url, key or api.key, payment)
    opened.append(stream)
    return stream


def test_a_key_holds_at_most_its_streams_over_every_server_process(api: Api) -> None:
    with streams() as opened:
        assert [_open(api, opened).response.status_code for _ in range(PER_KEY)] == [200] * 3
        # Each on a connection of its own: they land on both server processes; counted
        # per process, one of these would find room.
        refused = [_open(api, opened) for _ in range(2 * PER_KEY)]
        assert [s.response.status_code for s in refused] == [429] * (2 * PER_KEY)
        assert {error_of(s.response)["code"] for s in refused} == {"too_many_streams"}
        assert _open(api, opened, key=api.other_key).response.status_code == 200

        opened[0].close()  # a stream that ends stops counting
        wait_for(
            lambda: _open(api, opened).response.status_code == 200,
            what="room for a stream once one ended",
        )


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _streams_held(port: int, pid: int) -> int:
    """Established connections to ``port`` that process ``pid`` holds."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    held = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in sockets:  # ESTABLISHED
            held += 1
    return held


def test_the_streams_of_a_killed_server_process_stop_counting(
    api: Api, server: tuple[str, int]
) -> None:
    url, parent = server
    port = int(url.rsplit(":", 1)[1])
    with streams() as opened:
        for _ in range(PER_KEY):
            _open(api, opened)
        assert _open(api, opened).response.status_code == 429
        held = {pid: _streams_held(port, pid) for pid in server_processes(parent)}
        victim = max(held, key=lambda pid: held[pid])
        os.kill(victim, signal.SIGKILL)
        # A zombie at least: its exit has closed its files, so released its slot's lock (while
        # it exits, /proc may already show it without a command line, its files still open).
        wait_for(lambda: _exited(victim), what="the killed process gone")
        # Its streams are cut, and no longer count against the key: at once once the quota
        # finds its slot free, or once its replacement, which may take that slot first, has
        # cleared the slot's counts (a moment after it starts).
        wait_for(
            lambda: _open(api, opened).response.status_code == 200,
            what="room once the killed process's streams stopped counting",
        )
        reopened = [_open(api, opened) for _ in range(held[victim] - 1)]
        assert [s.response.status_code for s in reopened] == [200] * (held[victim] - 1), held
        assert _open(api, opened).response.status_code == 429
