"""Routing tables: each consumer's decision for every event type, and the calls they make.

A table must name every type of its topic's events (``EventType``, unless it says ``kinds``), with
a handler or ``IGNORE``: an event type added later fails at import of every consumer that has not
decided about it, never falls through silently.
Tables register themselves by name (``register``), so that one test walks them all.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar

from workers.core.consuming.batch import Batch, Received
from workers.core.events import EventType


class IncompleteRoutes(ValueError):
    """A routing table without a decision for some event type."""


class _Ignore:
    """The decision to do nothing with an event type (its offsets still advance)."""

    def __repr__(self) -> str:
        return "IGNORE"


IGNORE: Final = _Ignore()

H = TypeVar("H")
# An unbound method of the handlers' class: ``def apply(self, batch: Batch) -> None`` or
# ``async def apply(self, batch: Batch) -> None``.
Handler = Callable[[H, Batch], object]
# The table's key: ``EventType`` or another ``kinds``. A TypeVar because Mapping is invariant in
# its key, so that a ``dict[EventType, ...]`` built beforehand is a table too.
E = TypeVar("E", bound=StrEnum)


class Routes(Generic[H]):
    """One consumer's exhaustive ``{event type: handler | IGNORE}``, over ``kinds``: the types
    of the events its topics carry (payment events unless it says otherwise)."""

    def __init__(
        self,
        name: str,
        table: Mapping[E, Handler[H] | _Ignore],
        kinds: type[StrEnum] = EventType,
    ) -> None:
        missing = [t.value for t in kinds if t not in table]
        if missing:
            raise IncompleteRoutes(f"{name}: no decision for {', '.join(missing)}")
        self.name = name
        self.kinds = kinds
        self.table: dict[StrEnum, Handler[H] | _Ignore] = {t: r for t, r in table.items()}
        # By the type's name, as the ce_type header carries it: ignored messages are passed
        # over without decoding their body.
        self._ignored = frozenset(t.value for t, r in self.table.items() if r is IGNORE)

    def route(self, event_type: StrEnum) -> Handler[H] | _Ignore:
        return self.table[event_type]

    def handler(self, event_type: StrEnum) -> Handler[H]:
        """The handler of a type that is not ignored."""
        route = self.table[event_type]
        if isinstance(route, _Ignore):
            raise LookupError(f"{self.name} ignores {event_type}")
        return route

    def ignores(self, type_name: str | None) -> bool:
        return type_name in self._ignored

    @property
    def handlers(self) -> list[Handler[H]]:
        """Each handler once, in the table's order."""
        found: dict[int, Handler[H]] = {}
        for route in self.table.values():
            if not isinstance(route, _Ignore):
                found.setdefault(id(route), route)
        return list(found.values())


_REGISTERED: dict[str, Routes[Any]] = {}


def register(routes: Routes[H]) -> Routes[H]:
    """Record a consumer's table where the exhaustive routing test finds it."""
    _REGISTERED[routes.name] = routes
    return routes


def registered() -> dict[str, Routes[Any]]:
    return dict(_REGISTERED)


K = TypeVar("K", bound=Hashable)


def calls(
    items: Sequence[Received], handler_of: Callable[[Received], K]
) -> list[tuple[K, list[Received]]]:
    """The handler calls that take ``items`` (decoded, routed) in order per key.

    Each key's items are cut into runs going to one handler; the n-th runs of all keys form
    wave n, one call per handler. Waves run one after another, so a key's events reach the
    handlers in offset order even when they go to several; with one handler this is a single
    call of every item, in offset order within each partition.
    """
    runs_of: dict[bytes | None, int] = {}
    last_handler: dict[bytes | None, K] = {}
    waves: list[dict[K, list[Received]]] = []
    for item in items:
        handler = handler_of(item)
        wave = runs_of.get(item.key, -1)
        if wave < 0 or last_handler[item.key] != handler:
            wave += 1
            runs_of[item.key] = wave
            last_handler[item.key] = handler
        if wave == len(waves):
            waves.append({})
        waves[wave].setdefault(handler, []).append(item)
    return [(handler, batch) for wave in waves for handler, batch in wave.items()]
