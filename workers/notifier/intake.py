"""The notifier's intake, on the consumer engine: keep a view of each payment, record one
delivery per terminal event and endpoint, and hand the fresh ones to the sender.

A batch is recorded in one transaction of a handful of statements, whatever its size: which of
its events are new (``notifier.processed_events``: a redelivered event records nothing twice),
the payments' views read and written back, the merchants' endpoints with their attempts in
flight, the deliveries. Those the sender has room for, within each endpoint's share over every
notifier process, are leased in that transaction and handed to the sender in memory once it
commits: no claim round trip. The rest wait for a claim (``workers.notifier.sender``). The
intake never waits on a merchant's server.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from workers.core import tracing
from workers.core.config import NotifierSettings
from workers.core.consuming import Batch, Received
from workers.core.delivery import headers_of
from workers.core.endpoint_events import WEBHOOK_EVENT_TYPES, wants
from workers.core.events import CREATED, PAYOUT_EVENTS, Event, EventType, header
from workers.core.ids import new_id
from workers.core.payout_view import payout_advance, payout_initial
from workers.core.projection import advance, initial
from workers.core.sealing import Keyring
from workers.core.sql import load_queries
from workers.core.webhooks import webhook_body
from workers.notifier.endpoint_catch_up import EndpointCatchUp
from workers.notifier.endpoint_secrets import Signing, load_secrets, no_secret
from workers.notifier.endpoints import ENDPOINT_DISABLED
from workers.notifier.posting import Due
from workers.notifier.sender import Sender

Q = load_queries("workers.notifier")
Conn = AsyncConnection[Any]

# The events a webhook tells merchants of (each endpoint is sent those it wants).
NOTIFIED: Final = frozenset(WEBHOOK_EVENT_TYPES)


@dataclass(frozen=True)
class _Endpoint:
    id: str
    url: str
    enabled_events: tuple[str, ...]
    signing: Signing  # no secrets but an error: the delivery is recorded failed, unsent
    status: str
    room: int  # attempts it may still have in flight, over every process


Notified = tuple[Received, dict[str, Any]]  # an event, and the payment's view it describes


class Intake:
    def __init__(
        self,
        config: NotifierSettings,
        pool: AsyncConnectionPool[Any],
        sender: Sender,
        catch_up: EndpointCatchUp,
    ) -> None:
        self.config = config
        self.pool = pool
        self.sender = sender
        self.catch_up = catch_up

    async def take(self, batch: Batch) -> None:
        """A batch's events in one transaction; its fresh deliveries to the sender, to the
        endpoints as changed by every change published before the batch."""
        if any(item.event.type in NOTIFIED for item in batch.items):
            await self.catch_up.since(time.monotonic())
        rows: list[_Row] = []
        reserved = 0
        try:
            async with self.pool.connection() as conn, conn.transaction():
                fresh = await _new_events(conn, batch.items)
                notified = await _project(conn, fresh)
                if notified:
                    rows = await self._rows(conn, notified)
                    reserved = self.sender.reserve(sum(r.sendable for r in rows))
                    _lease(rows, reserved)
                    inserted = await _insert(conn, rows, self.config.lease_s)
                    rows = [r for r in rows if r.id in inserted]
        except BaseException:
            self.sender.hand_over([], reserved)
            raise
        self.sender.hand_over([r.due() for r in rows if r.leased], reserved)

    async def _rows(self, conn: Conn, notified: list[Notified]) -> list[_Row]:
        """A delivery of each notified event to each of its merchant's endpoints, with what
        each endpoint may still have in flight read under the claims' turn (held to the
        commit), so that leases taken here and by claims never exceed an endpoint's share."""
        await conn.execute(Q["deliveries_claim_lock"])
        merchants = sorted({item.event.merchant_id for item, _ in notified})
        endpoints = await _endpoints(
            conn, self.sender.keys, merchants, self.config.max_in_flight_per_endpoint
        )
        return [
            _Row(item, payment, endpoint)
            for item, payment in notified
            for endpoint in endpoints.get(item.event.merchant_id, ())
            if wants(endpoint.enabled_events, item.event.type.value)
        ]


async def _new_events(conn: Conn, items: Sequence[Received]) -> list[Received]:
    if not items:
        return []
    ids = [item.event.event_id for item in items]
    cursor = await conn.execute(Q["events_mark_processed"], {"event_ids": ids})
    new = {row[0] for row in await cursor.fetchall()}
    fresh = []
    for item in items:
        if item.event.event_id in new:  # the first of its copies in the batch only
            new.discard(item.event.event_id)
            fresh.append(item)
    return fresh


async def _project(conn: Conn, items: list[Received]) -> list[Notified]:
    """Each payment's view after the events, in order, written back once; the notified
    events, each with the view it describes."""
    later = sorted({i.event.payment_id for i in items if i.event.type not in _CREATING})
    views: dict[str, dict[str, Any]] = {}
    if later:
        cursor = await conn.execute(Q["payments_get"], {"payment_ids": later})
        views = {row[0]: row[1] for row in await cursor.fetchall()}
    changed: dict[str, Event] = {}
    notified = []
    for item in items:
        event = item.event
        before = views.get(event.payment_id)
        after = _view_after(before, event)
        if after is None:
            continue  # a payment (or payout) whose start this notifier never saw
        if after != before:
            views[event.payment_id] = after
            changed[event.payment_id] = event
        if event.type in NOTIFIED:
            notified.append((item, after))
    if changed:
        await conn.execute(
            Q["payments_put"],
            {
                "payment_ids": list(changed),
                "merchant_ids": [e.merchant_id for e in changed.values()],
                "objects": [Jsonb(views[payment_id]) for payment_id in changed],
            },
        )
    return notified


# The events that start a view: a payment's creation, or a payout's request.
_CREATING: Final = CREATED | {EventType.PAYOUT_REQUESTED}


def _view_after(before: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """The payment's (or payout's) view after ``event``; None without one to follow."""
    if event.type in CREATED:
        return initial(event)
    if event.type is EventType.PAYOUT_REQUESTED:
        return payout_initial(event)
    if before is None:
        return None
    if event.type in PAYOUT_EVENTS:
        return payout_advance(before, event)
    return advance(before, event)


async def _endpoints(
    conn: Conn, keys: Keyring, merchant_ids: list[str], per_endpoint: int
) -> dict[str, list[_Endpoint]]:
    cursor = await conn.execute(Q["endpoints_of_merchants"], {"merchant_ids": merchant_ids})
    rows = await cursor.fetchall()
    signing = await load_secrets(conn, keys, (row[0] for row in rows))
    found: dict[str, list[_Endpoint]] = {}
    for id_, merchant_id, url, enabled_events, status, in_flight in rows:
        secrets = signing.get(id_) or no_secret(id_)
        endpoint = _Endpoint(id_, url, tuple(enabled_events), secrets, status,
                             per_endpoint - int(in_flight))  # fmt: skip
        found.setdefault(merchant_id, []).append(endpoint)
    return found


class _Row:
    """One delivery of an event to an endpoint, as the intake records it."""

    __slots__ = ("body", "endpoint", "event", "id", "leased", "traceparent")

    def __init__(self, item: Received, payment: dict[str, Any], endpoint: _Endpoint) -> None:
        self.id = new_id("msg")
        self.event = item.event
        self.endpoint = endpoint
        self.body = webhook_body(self.event.type.value, self.event.occurred_at, payment)
        # The event's own trace context: the attempts hang under the span that emitted it.
        self.traceparent = header(headers_of(item.message), tracing.TRACEPARENT)
        self.leased = False

    @property
    def sendable(self) -> bool:
        return self.endpoint.status == "enabled"

    def due(self) -> Due:
        e = self.endpoint
        event = self.event
        return Due(self.id, e.id, e.url, e.signing.secrets, e.status, self.body, 0,
                   event.payment_id, str(event.event_id), event.correlation_id, self.traceparent,
                   secret_error=e.signing.error)  # fmt: skip


def _lease(rows: list[_Row], slots: int) -> None:
    """Mark what the sender takes at once: up to ``slots``, in order, each endpoint within its
    share; a disabled endpoint's deliveries are kept, never sent."""
    room = {r.endpoint.id: r.endpoint.room for r in rows}
    for row in rows:
        if slots <= 0:
            return
        if row.sendable and room[row.endpoint.id] > 0:
            row.leased = True
            room[row.endpoint.id] -= 1
            slots -= 1


async def _insert(conn: Conn, rows: list[_Row], lease_s: float) -> set[str]:
    """The deliveries (a disabled endpoint's kept as failed); the ids inserted."""
    if not rows:
        return set()
    enabled = [r.sendable for r in rows]
    cursor = await conn.execute(
        Q["deliveries_insert"],
        {
            "ids": [r.id for r in rows],
            "endpoint_ids": [r.endpoint.id for r in rows],
            "event_ids": [r.event.event_id for r in rows],
            "merchant_ids": [r.event.merchant_id for r in rows],
            "payment_ids": [r.event.payment_id for r in rows],
            "event_types": [r.event.type.value for r in rows],
            "bodies": [r.body for r in rows],
            "correlation_ids": [r.event.correlation_id for r in rows],
            "traceparents": [r.traceparent for r in rows],
            "statuses": ["pending" if on else "failed" for on in enabled],
            # A disabled endpoint's deliveries are kept, not sent: `webhooks retry` sends them
            # once it is enabled again.
            "last_errors": [None if on else ENDPOINT_DISABLED for on in enabled],
            "leased": [r.leased for r in rows],
            "lease_s": lease_s,
        },
    )
    return {str(row[0]) for row in await cursor.fetchall()}
