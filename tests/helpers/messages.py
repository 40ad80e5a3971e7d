"""Stand-ins for a Kafka message in pure tests: just what planning and routing read of one."""

from __future__ import annotations

from typing import cast

from workers.core.consuming import Received
from workers.core.errors import EventError
from workers.core.events import Event
from workers.core.kafka import Message


class FakeMessage:
    def __init__(
        self,
        partition: int,
        offset: int,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._partition, self._offset, self._key = partition, offset, key
        self._headers = headers

    def topic(self) -> str:
        return "t.payments"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def received(
    partition: int,
    offset: int,
    decoded: Event | EventError,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> Received:
    return Received(cast(Message, FakeMessage(partition, offset, key, headers)), decoded)
