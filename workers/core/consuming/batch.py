"""What a handler is given: its events of a poll batch, and what it may ask of the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from workers.core.commands import Command
from workers.core.delivery import offset_of, partition_of, topic_of
from workers.core.errors import EventError
from workers.core.events import Event, Headers, decode
from workers.core.kafka import Message

Partition = tuple[str, int]
DeadLetterSink = Callable[[Message, BaseException], None]


class Envelope(Protocol):
    """A decoded message of some topic: what routing needs of it (payment events are one kind)."""

    @property
    def type(self) -> StrEnum: ...


# Parses one message's value and headers; raises EventError (MalformedEvent, UnknownEventType).
Decoder = Callable[[bytes | None, Headers | None], Envelope]


@dataclass(frozen=True, slots=True)
class Received:
    """A message and what decoding it gave: an event, or why it is not one."""

    message: Message
    decoded: Envelope | EventError
    # Read once from the message: routing, ordering and the ledger's planner ask often.
    partition: Partition = field(init=False)
    offset: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition", (topic_of(self.message), partition_of(self.message)))
        object.__setattr__(self, "offset", offset_of(self.message))

    @property
    def key(self) -> bytes | None:
        key = self.message.key()
        return key if isinstance(key, bytes) or key is None else str(key).encode()

    @property
    def envelope(self) -> Envelope:
        """What the message decoded to; only for an item that decoded (the engine routes only
        those, except to a subscriber that stores its own offsets, which gets the undecodable
        ones too)."""
        if isinstance(self.decoded, EventError):
            raise TypeError(f"offset {self.offset} did not decode: {self.decoded}")
        return self.decoded

    @property
    def event(self) -> Event:
        """The payment event (for consumers of the payments topic)."""
        envelope = self.envelope
        if not isinstance(envelope, Event):
            raise TypeError(f"offset {self.offset} is not a payment event")
        return envelope

    @property
    def command(self) -> Command:
        """The command (for consumers of the commands topic)."""
        envelope = self.envelope
        if not isinstance(envelope, Command):
            raise TypeError(f"offset {self.offset} is not a command")
        return envelope


def ends_of(items: Iterable[Received]) -> dict[Partition, int]:
    """Per partition, the offset after the last of ``items``."""
    ends: dict[Partition, int] = {}
    for item in items:
        ends[item.partition] = max(ends.get(item.partition, 0), item.offset + 1)
    return ends


def receive(
    message: Message, decoder: Decoder = decode, headers: Headers | None = None
) -> Received:
    """``headers``: the message's, when already read (reading them copies them)."""
    try:
        decoded: Envelope | EventError = decoder(
            message.value(), raw_headers(message) if headers is None else headers
        )
    except EventError as exc:
        decoded = exc
    return Received(message, decoded)


def decode_all(messages: Sequence[Message], decoder: Decoder = decode) -> list[Received]:
    return [receive(message, decoder) for message in messages]


def raw_headers(message: Message) -> Headers | None:
    """The headers as the client gives them (a copy cost ~2.5 us a message, ~4% of a replay)."""
    raw = message.headers()
    return list(raw.items()) if isinstance(raw, dict) else raw


class Batch:
    """One handler call: events in offset order within each partition (so in order per key).

    A handler that applies a batch set-based, one statement for many payments, takes it in
    ``rounds()``: none holds two events of one payment.

    For a subscriber that stores its offsets with its effects (``OffsetStore``), also: where
    the engine positioned each partition, where each stands after this batch, and the means to
    ask for a re-seek; undecodable messages are among its items, for it to record.
    """

    __slots__ = ("_dead_letter", "_seeks", "items", "positions", "reload")

    def __init__(
        self,
        items: Sequence[Received],
        *,
        dead_letter: DeadLetterSink,
        positions: Mapping[Partition, int] | None = None,
    ) -> None:
        self.items = items
        # Store mode: the stored offset each partition was positioned at (absent: unknown).
        self.positions: Mapping[Partition, int] = positions or {}
        self._dead_letter = dead_letter
        self._seeks: dict[Partition, int] = {}
        self.reload = False

    def __len__(self) -> int:
        return len(self.items)

    @property
    def events(self) -> list[Event]:
        return [item.decoded for item in self.items if isinstance(item.decoded, Event)]

    @property
    def ends(self) -> dict[Partition, int]:
        """Per partition, the offset after this batch's last message."""
        return ends_of(self.items)

    def rounds(self) -> list[list[Received]]:
        """The items in rounds, each with at most one per key, a key's items in order."""
        rounds: list[list[Received]] = []
        seen: dict[bytes | None, int] = {}
        for item in self.items:
            index = seen.get(item.key, 0)
            seen[item.key] = index + 1
            if index == len(rounds):
                rounds.append([])
            rounds[index].append(item)
        return rounds

    def dead_letter(self, message: Message, exc: BaseException) -> None:
        """Send ``message`` to the dead-letter topic now (blocking; TransientError if Kafka
        does not take it). For handlers that record their dead letters themselves."""
        self._dead_letter(message, exc)

    def reseek(self, partition: Partition, offset: int) -> None:
        """Store mode: this partition was not where the store says; none of its messages were
        applied, and it is to be read again from ``offset``."""
        self._seeks[partition] = offset

    def reposition(self) -> None:
        """Store mode: the stored offsets changed under the engine (the ledger: a replay swapped
        in a rebuilt ledger); nothing was applied, every partition is to be read again from
        the store's offsets."""
        self.reload = True

    @property
    def seeks(self) -> Mapping[Partition, int]:
        return self._seeks
