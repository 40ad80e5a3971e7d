"""What the processor does with a batch: charge and refund as the orchestrator's commands say,
execute its manual-capture and payout commands, settle by the gateway's reports.

These are the consumer engine's handlers (``workers.core.consuming``), set-based: the payments
of a batch of charge commands start in one transaction and are charged at once
(``workers.processor.charging``), refunds are taken at once, a payment's messages one after
another. Each charge's work is done under a span of its own, made here so that the gateway calls
and the events emitted hang under it, and its ids are on every line written meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from opentelemetry.trace import SpanKind

from workers.core import correlation, tracing
from workers.core.consuming import Batch, Received
from workers.core.delivery import headers_of
from workers.core.observe import handling
from workers.processor.captures import Captures
from workers.processor.charging import Charging, Job, gather_all
from workers.processor.refunds import Refunds
from workers.processor.reports import Reports
from workers.processor.store import NewPayment

ROLE: Final = "processor"


class Processor:
    """The handlers of both subscribers (``workers.processor.worker``): the payment events and
    the orchestrator's commands."""

    def __init__(
        self, charging: Charging, refunds: Refunds, reports: Reports, captures: Captures
    ) -> None:
        self.charging = charging
        self.refunds = refunds
        self.reports = reports
        self.captures = captures

    async def charge(self, batch: Batch) -> None:
        """``payment.charge``: start and charge each payment, a round at a time (no round holds
        a payment twice). A payment started before (a redelivery, a resend) is not charged
        again: its answer is on the log already, or will be from the reconciler."""
        for round_ in batch.rounds():
            await self.charging.start([_job(item) for item in round_])

    async def refund(self, batch: Batch) -> None:
        """``payment.refund``: refuse each, or send it once to the gateway."""
        await _each(batch, lambda item: self.refunds.execute(item.command))

    async def execute(self, batch: Batch) -> None:
        """Authorize, capture, void and payout commands."""
        await self.captures.execute(batch)

    async def reported(self, batch: Batch) -> None:
        """``gateway.reported``: settle each payment the gateway reports on, once."""
        await _each(batch, lambda item: self.reports.on_reported(item.event))


async def _each(batch: Batch, handle: Callable[[Received], Awaitable[None]]) -> None:
    """``handle`` each message of ``batch``, a round at a time, those of a round at once."""
    for round_ in batch.rounds():
        await gather_all(_handled(item, handle) for item in round_)


async def _handled(item: Received, handle: Callable[[Received], Awaitable[None]]) -> None:
    with handling(ROLE, headers_of(item.message)):
        await handle(item)


def _job(item: Received) -> Job:
    headers = headers_of(item.message)
    fields = correlation.of_headers(headers)
    name = f"{ROLE} {fields['event_type']}"
    span = tracing.started(name, SpanKind.CONSUMER, headers, fields)
    return Job(NewPayment.of(item.command), span, fields)
