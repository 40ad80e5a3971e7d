"""What the processor does with a batch of events: start and charge the new payments, answer
the refund requests, settle by the gateway's reports.

These are the consumer engine's handlers (``workers.core.consuming``), set-based: the payments
of a batch start in one transaction and are charged at once (``workers.processor.charging``),
refund requests are taken at once, a payment's events one after another. Each event's work is
done under a span of its own, made here so that the gateway calls and the events emitted hang
under it, and its ids are on every line written meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from opentelemetry.trace import SpanKind

from workers.core import correlation, tracing
from workers.core.consuming import Batch, Received
from workers.core.delivery import headers_of
from workers.core.events import Event
from workers.core.observe import handling
from workers.processor.charging import Charging, Job, gather_all
from workers.processor.refunds import Refunds
from workers.processor.reports import Reports
from workers.processor.store import NewPayment

ROLE: Final = "processor"


class Processor:
    def __init__(self, charging: Charging, refunds: Refunds, reports: Reports) -> None:
        self.charging = charging
        self.refunds = refunds
        self.reports = reports

    async def start(self, batch: Batch) -> None:
        """``payment.initiated``: start and charge each payment, a round at a time (no round
        holds a payment twice)."""
        for round_ in batch.rounds():
            await self.charging.start([_job(item) for item in round_])

    async def reported(self, batch: Batch) -> None:
        """``gateway.reported``: settle each payment the gateway reports on, once."""
        await _each(batch, self.reports.on_reported)

    async def refund(self, batch: Batch) -> None:
        """``payment.refund_requested``: refuse each, or send it once to the gateway."""
        await _each(batch, self.refunds.on_requested)


async def _each(batch: Batch, handle: Callable[[Event], Awaitable[None]]) -> None:
    """``handle`` each event of ``batch``, a round at a time, the events of a round at once."""
    for round_ in batch.rounds():
        await gather_all(_handled(item, handle) for item in round_)


async def _handled(item: Received, handle: Callable[[Event], Awaitable[None]]) -> None:
    with handling(ROLE, headers_of(item.message)):
        await handle(item.event)


def _job(item: Received) -> Job:
    headers = headers_of(item.message)
    fields = correlation.of_headers(headers)
    name = f"{ROLE} {fields['event_type']}"
    span = tracing.started(name, SpanKind.CONSUMER, headers, fields)
    return Job(NewPayment.of(item.event), span, fields)
