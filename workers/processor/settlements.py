"""Charge outcomes, committed in groups: what comes back while one transaction is on its way
goes in the next, all together.

A settlement is a payment's gateway calls (its attempt rows, committed with it, never alone)
and what they decided: settled (succeeded or failed, its event staged with it, once) or
deferred to the reconciler (the outcome is unknown). A group commits in one transaction; if
that fails other than for want of the database, each settlement is committed alone, so that
one that cannot be written holds up none of the others (its caller gets its error).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from workers.core.delivery import TRANSIENT
from workers.core.outbox import OutboxRow
from workers.processor.states import State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One gateway call, as ``processor.attempts`` records it."""

    kind: str  # charge | lookup | refund | reversal | cancel | report
    outcome: str
    detail: str | None
    duration_ms: int


def attempt_of(kind: str, outcome: object, duration_ms: int) -> Attempt:
    """A call recorded by its outcome object (``Charged``, ``Unknown``, ...)."""
    return Attempt(kind, type(outcome).__name__.lower(), detail_of(outcome), duration_ms)


def detail_of(outcome: object) -> str | None:
    for name in ("charge_id", "code", "detail", "reason", "refund_id"):
        value = getattr(outcome, name, None)
        if value is not None:
            return str(value)
    return None


@dataclass(frozen=True)
class Settle:
    """The payment's state -> ``state`` (a ``Settlement`` names the one it is in), with the
    event that says so (made under the payment's span)."""

    state: State
    charge_id: str | None
    reason: str | None
    next_check_at: datetime | None  # set: the reconciler watches for a late charge until then
    event: OutboxRow


@dataclass(frozen=True)
class Defer:
    """Not settled yet: the reconciler checks again after ``after_s`` (None: it stops asking,
    and the gateway's report settles it); ``charge_id``: the gateway's, once it is known."""

    after_s: float | None
    charge_id: str | None = None


@dataclass(frozen=True)
class Settlement:
    payment_id: str
    state: State  # the state the payment is in (a deferral applies only to it)
    attempts: tuple[Attempt, ...]
    verdict: Settle | Defer


class Store(Protocol):
    async def settle_many(self, group: Sequence[Settlement]) -> set[str]:
        """Commit ``group`` in one transaction; the payments it settled (moved and emitted)."""
        ...


class Settler:
    """Commits settlements in groups, one transaction at a time (on one event loop)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[tuple[Settlement, asyncio.Future[bool]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def settle(self, settlement: Settlement) -> bool:
        """Once ``settlement`` is committed: whether it settled the payment (False: deferred,
        or settled before)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((settlement, done))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        try:
            while self._waiting:
                group = self._next_group()
                await self._commit(group)
        finally:
            self._flushing = None

    def _next_group(self) -> list[tuple[Settlement, asyncio.Future[bool]]]:
        """What waits, each payment once (a second settlement of one goes in the next group)."""
        group: list[tuple[Settlement, asyncio.Future[bool]]] = []
        rest: list[tuple[Settlement, asyncio.Future[bool]]] = []
        seen: set[str] = set()
        for entry in self._waiting:
            (rest if entry[0].payment_id in seen else group).append(entry)
            seen.add(entry[0].payment_id)
        self._waiting = rest
        return group

    async def _commit(self, group: list[tuple[Settlement, asyncio.Future[bool]]]) -> None:
        try:
            settled = await self.store.settle_many([s for s, _ in group])
        except TRANSIENT as exc:
            for _settlement, done in group:
                _fail(done, exc)
            return
        except Exception as exc:
            if len(group) == 1:
                _fail(group[0][1], exc)
                return
            log.warning("a group of %d settlements failed (%r); each alone", len(group), exc)
            for entry in group:
                await self._commit([entry])
            return
        for settlement, done in group:
            if not done.done():
                done.set_result(settlement.payment_id in settled)


def _fail(done: asyncio.Future[bool], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)
