"""Running the consumer engine in tests: subscribers that record what they are given."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.consuming import Batch, Engine, Received, Routes, Subscriber
from workers.core.events import Event, EventType, Initiated, new_event

GROUP = "test-group"
# What a recorder's ``fail`` does with the events of a call before anything is recorded: a
# call that raises has recorded nothing (all or nothing, as a transaction).
Fail = Callable[[list[Event]], None]


def event(n: int, payment: str | None = None) -> Event:
    """A payment.initiated whose amount (100 + n) tells the events of a test apart."""
    return new_event(
        EventType.INITIATED,
        payment_id=payment or f"pay_{n}",
        merchant_id="mer_1",
        data=Initiated(amount=100 + n, currency="USD", payment_method="pm_card_visa"),
        source="test",
    )


def amount(e: Event) -> int:
    return e.payload(Initiated).amount


class Recorder:
    """Sync handlers that keep every call's items."""

    def __init__(self, fail: Fail | None = None) -> None:
        self.calls: list[list[Received]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def take(self, batch: Batch) -> None:
        if self.fail is not None:
            self.fail(batch.events)
        with self.lock:
            self.calls.append(list(batch.items))

    @property
    def events(self) -> list[Event]:
        with self.lock:
            return [item.event for call in self.calls for item in call]


class AsyncRecorder(Recorder):
    """The same on the event loop: ``work`` runs for each call, before it is recorded."""

    def __init__(self, work: Callable[[Batch], Any]) -> None:
        super().__init__()
        self.work = work

    async def take_async(self, batch: Batch) -> None:
        await self.work(batch)
        with self.lock:
            self.calls.append(list(batch.items))


def routes_to(handler: Any, name: str = "test", **decisions: Any) -> Routes[Any]:
    """A table sending every type to ``handler`` but those named (by member name)."""
    table = {t: decisions.get(t.name, handler) for t in EventType}
    return Routes(name, table)


def subscriber(
    handlers: Recorder, routes: Routes[Any] | None = None, **options: Any
) -> Subscriber[Any]:
    if routes is None:
        take = AsyncRecorder.take_async if isinstance(handlers, AsyncRecorder) else Recorder.take
        routes = routes_to(take)
    return Subscriber(GROUP, "test", routes, handlers, principal="operator", **options)


@contextmanager
def running(settings: Settings, sub: Subscriber[Any]) -> Iterator[Engine]:
    """The engine in a thread for the block, then stopped; it must stop cleanly."""
    stop = threading.Event()
    engine = Engine(settings, sub)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(engine.run(stop))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="engine-under-test")
    thread.start()
    try:
        yield engine
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the engine did not stop"
    assert not failures, failures


def run_until(settings: Settings, sub: Subscriber[Any], done: Callable[[], object]) -> None:
    with running(settings, sub):
        wait_for(done, 60, "the engine to get there")
