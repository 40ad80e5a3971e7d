"""Payouts: the processor executes the payout saga's ``payout.send`` commands, and settles the
payouts the gateway pays later.

Each payout is sent through the gateway once, with the idempotency key derived from the payout
id, and recorded in ``processor.payouts`` with the command (``ProcessorStore.payout_sent``).
Paid or failed at once (the simulator), it is recorded with the event that answers the
command (``payout.paid`` or ``payout.failed``). Taken but not paid yet (Stripe: ``pending``,
``in_transit``; a bank transfer lands days later), it is recorded ``in_transit`` with the
gateway's id and the command is done: nothing holds the command partition while the money
travels. It lands later, once, whoever tells it first: the gateway's report (Stripe's
``payout.paid`` / ``payout.failed`` webhook, as ``gateway.reported``) or the reconciler's look-up
by its id (``processor.pending_max_checks`` of them on the re-check schedule, then left to the
report), and the answering event is emitted then. A report that contradicts a landed payout
is logged and counted, never applied.

A redelivered command is found recorded and calls nothing; a resend (the orchestrator's, after
``orchestrator.command_timeout_s``) of a payout sent before sends nothing: its answer is staged
already, or comes when it lands. Once the reconciler's look-ups are spent, each resend looks the
payout up once more, so that one whose report never came (a webhook endpoint misconfigured or
down past the gateway's retries) still lands, at the pace of the command timeout.

No answer from the gateway to the send is a ``TransientError``: the engine takes the command
again after a backoff, with the same key, so the gateway answers with the payout it made, if it
made one; a payout is never taken for failed without the gateway's word.
"""

from __future__ import annotations

import logging

from workers.core.commands import Command, Payout
from workers.core.config import ProcessorSettings
from workers.core.errors import PermanentError, TransientError
from workers.core.events import GatewayReported
from workers.processor.gateway import GatewayUnreachable, Rejected
from workers.processor.operations import (
    FoundPayout,
    OperationsGateway,
    PayoutFailed,
    PayoutOutcome,
    PayoutRequest,
    PayoutSent,
)
from workers.processor.schedule import recheck_after_s
from workers.processor.store import PayoutOutcomeRow, PayoutRecord, ProcessorStore

log = logging.getLogger(__name__)

IN_TRANSIT = "in_transit"


class Payouts:
    def __init__(self, store: ProcessorStore, gateway: OperationsGateway) -> None:
        self.store = store
        self.gateway = gateway

    async def execute(self, command: Command) -> None:
        """One ``payout.send`` not executed before (``Captures`` dedupes and routes it)."""
        payout = await self.store.payout(command.subject)
        if payout is None:
            await self.store.payout_sent(command, await self._send(command))
            return
        await self.store.payout_sent(command, None)
        if payout.status == IN_TRANSIT and payout.next_check_at is None and command.attempt > 1:
            await self._landed(payout)  # left to the report, which may never come

    async def _send(self, command: Command) -> PayoutOutcomeRow:
        data = command.data
        if not isinstance(data, Payout):
            raise PermanentError(f"{command.type} is not a payout")
        request = PayoutRequest(command.subject, command.merchant_id, data.amount, data.currency,
                                destination=data.destination)  # fmt: skip
        outcome = await self.gateway.payout(request)
        row = outcome_row(outcome)
        if row is None:
            raise TransientError(f"payout {command.subject}: no answer ({outcome})")
        if isinstance(outcome, Rejected):
            log.error("gateway refused payout %s: %s", command.subject, outcome.detail)
        return row

    async def recheck(self, payout_id: str, config: ProcessorSettings) -> None:
        """The reconciler's look-up of a payout in transit: land it if the gateway has settled
        it, else look again later, ``config.pending_max_checks`` times in all."""
        payout = await self.store.payout(payout_id)
        if payout is None or payout.status != IN_TRANSIT:
            return
        if not await self._landed(payout):
            await self.store.defer_payout(payout_id, next_look_up_s(config, payout))

    async def _landed(self, payout: PayoutRecord) -> bool:
        """Look a payout in transit up at the gateway and land it if the gateway has settled
        it; whether it did."""
        if payout.gateway_payout_id is None:
            return False
        try:
            found: FoundPayout | None = await self.gateway.find_payout(
                payout.payout_id, payout.gateway_payout_id
            )
        except GatewayUnreachable as exc:
            log.info("payout %s: no answer from the gateway (%s)", payout.payout_id, exc)
            return False
        row = None if found is None else outcome_row(found)
        if row is None or row.status == IN_TRANSIT:
            return False
        await self.store.payout_landed(payout.payout_id, row)
        return True


async def on_reported(store: ProcessorStore, payout_id: str, report: GatewayReported) -> str:
    """Land a payout in transit by the gateway's report of it, once; what came of the report
    (``workers.processor.metrics.REPORTS``' outcomes)."""
    payout = await store.payout(payout_id)
    if payout is None:
        return "unknown_payout"
    told = reported_row(report)
    if payout.gateway_payout_id != report.object_id:
        return _contradicted(payout, report)
    if payout.status == IN_TRANSIT:
        return "applied" if await store.payout_landed(payout_id, told) else "stale"
    if payout.status == told.status:
        return "duplicate"
    return _contradicted(payout, report)


def outcome_row(outcome: PayoutOutcome) -> PayoutOutcomeRow | None:
    """How a payout stands by the gateway's answer; None when there was none (unknown)."""
    match outcome:
        case PayoutSent(gateway_id, "paid"):
            return PayoutOutcomeRow("paid", gateway_id, None)
        case PayoutSent(gateway_id):  # pending, in_transit: it lands later
            return PayoutOutcomeRow(IN_TRANSIT, gateway_id, None)
        case PayoutFailed(gateway_id, code):
            return PayoutOutcomeRow("failed", gateway_id, code)
        case Rejected():
            return PayoutOutcomeRow("failed", None, "gateway_rejected")
    return None


def reported_row(report: GatewayReported) -> PayoutOutcomeRow:
    """What the gateway's ``payout.paid`` or ``payout.failed`` report says of the payout."""
    if report.gateway_event_type == "payout.paid":
        return PayoutOutcomeRow("paid", report.object_id, None)
    return PayoutOutcomeRow("failed", report.object_id, report.failure_reason or "failed")


def next_look_up_s(config: ProcessorSettings, payout: PayoutRecord) -> float | None:
    """When to look a payout in transit up again; None once it was looked up
    ``pending_max_checks`` times (the gateway's report settles it)."""
    if payout.checks + 1 >= config.pending_max_checks:
        log.warning(
            "payout %s still in transit after %d look-ups: left to the gateway's report",
            payout.payout_id,
            payout.checks + 1,
        )
        return None
    return recheck_after_s(config, payout.checks)


def _contradicted(payout: PayoutRecord, report: GatewayReported) -> str:
    log.warning(
        "gateway report %s (%s of %s) contradicts payout %s, which is %s at %s: not applied",
        report.gateway_event_id,
        report.gateway_event_type,
        report.object_id,
        payout.payout_id,
        payout.status,
        payout.gateway_payout_id,
    )
    return "contradicted"
