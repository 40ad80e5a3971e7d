"""What a consumer declares: its group, role, topics, routing table and where its offsets live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from workers.core.config import KafkaRole
from workers.core.consuming.batch import Decoder
from workers.core.consuming.offsets import OffsetStore
from workers.core.consuming.routing import IGNORE, Routes
from workers.core.events import decode

H = TypeVar("H")


@dataclass(frozen=True)
class Subscriber(Generic[H]):
    """A consumer, declared; ``workers.core.consuming.engine`` runs it.

    ``handlers`` is the object whose methods ``routes`` names. ``store``: None keeps the offsets
    in Kafka (committed after the effects); an ``OffsetStore`` keeps them with the effects, and
    then the whole poll batch goes to one handler call (one transaction), one at a time.
    ``max_in_flight``: handler calls running at once (never two of one key). ``role`` names it
    in logs and metrics; ``principal`` is the Kafka principal its clients authenticate as.
    ``decoder`` turns a message into what ``routes`` is keyed by (an event, or a command).
    ``spans``: the engine records each event's span once its call is done; False when the
    handlers make them themselves, to hang what they call and emit under each event's span.
    """

    group: str
    role: str
    routes: Routes[H]
    handlers: H
    principal: KafkaRole = field(kw_only=True)
    topics: tuple[str, ...] = ()  # () means the payments topic
    store: OffsetStore | None = None
    max_in_flight: int = 1
    spans: bool = True
    # How its messages decode: events, or ``workers.core.commands.decode`` for the commands topic.
    decoder: Decoder = decode

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"{self.role}: max_in_flight must be 1 or more")
        if self.store is None:
            return
        if self.max_in_flight != 1 or len(self.routes.handlers) != 1:
            raise ValueError(f"{self.role}: stored offsets need one handler, one batch at a time")
        if IGNORE in self.routes.table.values():
            raise ValueError(f"{self.role}: stored offsets advance only through the handler")
