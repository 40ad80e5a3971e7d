"""Refunds, as the orchestrator's refund saga commands them: checked, sent to the gateway,
and settled, or handed to the reconciler.

A refund whose outcome is unknown (no answer, 5xx, 409) stays ``requested`` and the handler
returns: it never holds a consumer slot while the gateway's refund API is down. The reconciler
then re-checks it on its backoff schedule: it looks the refund up at the gateway by its
reference (the refund id), and sends it again only when the gateway has none, with the same
idempotency key every time, so it can never refund twice (even with a provider that forgets
keys after a while, the lookup finds a refund made long ago).
"""

from __future__ import annotations

import logging
from typing import Final

from workers.core.commands import Command
from workers.core.commands import Refund as RefundCommand
from workers.core.config import Settings
from workers.core.observe import following_up
from workers.processor.gateway import (
    Gateway,
    GatewayRefund,
    GatewayUnreachable,
    RefundDone,
    RefundOutcome,
    Rejected,
    Unknown,
    refund_key,
    timed,
)
from workers.processor.schedule import recheck_after_s
from workers.processor.states import State
from workers.processor.store import Payment, ProcessorStore, Refund

log = logging.getLogger(__name__)

INVALID_STATE: Final = "invalid_state"
AMOUNT_TOO_LARGE: Final = "amount_exceeds_refundable"
GATEWAY_REJECTED: Final = "gateway_rejected"


class Refunds:
    def __init__(self, settings: Settings, store: ProcessorStore, gateway: Gateway) -> None:
        self.config = settings.processor
        self.store = store
        self.gateway = gateway

    async def execute(self, command: Command) -> None:
        """The orchestrator's ``payment.refund`` command: refuse it, or record it and send it
        once (a redelivered or resent command finds the refund recorded)."""
        data = command.data
        assert isinstance(data, RefundCommand), f"a {command.type} command is no refund"
        refund = await self.store.refund(data.refund_id)
        if refund is not None and not _ours_to_send(refund):
            return
        payment = await self.store.get(command.subject)
        if refund is None:
            problem = await self._problem(payment, data.amount)
            if problem is not None:
                correlation = command.correlation_id if payment is None else payment.correlation_id
                await self.store.refund_refused(command, correlation, problem)
                return
            await self.store.refund_requested(command)
            refund = await self.store.refund(data.refund_id)
        assert payment is not None
        assert refund is not None
        if isinstance(await self._send(payment, refund), Unknown):
            await self._look_up(payment, refund)

    async def recheck(self, refund_id: str) -> None:
        """The reconciler's check of a refund whose outcome is unknown."""
        refund = await self.store.refund(refund_id)
        if refund is None or refund.status != "requested":
            return
        payment = await self.store.get(refund.payment_id)
        assert payment is not None, "a refund recorded for a payment never seen"
        with following_up(
            "reconciler refund check",
            payment.traceparent,
            payment_id=payment.payment_id,
            correlation_id=payment.correlation_id,
        ):
            found = await self._find(payment, refund)
            if found is None:
                await self._defer(refund)  # no answer: ask again later, never guess
            elif found:
                await self.store.refund_succeeded(payment, refund, found[0].id)
            elif isinstance(await self._send(payment, refund), Unknown):
                await self._defer(refund)

    async def _problem(self, payment: Payment | None, amount: int) -> str | None:
        """Why a new refund request is refused, if it is."""
        if payment is None or payment.state != State.SUCCEEDED:
            return INVALID_STATE
        if amount > await self.store.refundable(payment.payment_id):
            return AMOUNT_TOO_LARGE
        return None

    async def _send(self, payment: Payment, refund: Refund) -> RefundOutcome:
        """Ask the gateway to refund, and settle a definite answer; returns the outcome."""
        assert payment.charge_id is not None, "a refund of a payment never charged"
        key = refund_key(refund.refund_id)
        outcome: RefundOutcome
        outcome, ms = await timed(
            self.gateway.refund(payment.charge_id, refund.amount, key, refund.refund_id)
        )
        await self.store.record(payment.payment_id, "refund", outcome, ms)
        match outcome:
            case RefundDone(gateway_refund_id):
                await self.store.refund_succeeded(payment, refund, gateway_refund_id)
            case Rejected(detail):
                log.error("gateway refused refund %s: %s", refund.refund_id, detail)
                await self.store.refund_rejected(payment, refund, GATEWAY_REJECTED)
        return outcome

    async def _look_up(self, payment: Payment, refund: Refund) -> None:
        """After an unknown outcome: a refund found settles it; else the reconciler re-checks."""
        found = await self._find(payment, refund)
        if found:
            await self.store.refund_succeeded(payment, refund, found[0].id)
        else:
            await self._defer(refund)

    async def _find(self, payment: Payment, refund: Refund) -> list[GatewayRefund] | None:
        """The gateway's succeeded refunds with this refund's reference; None without an answer."""
        try:
            refunds, ms = await timed(
                self.gateway.find_refunds(refund.refund_id, payment.charge_id)
            )
        except GatewayUnreachable as exc:
            detail = f"{refund.refund_id}: {exc}"
            await self.store.attempt(payment.payment_id, "lookup", "unreachable", detail, 0)
            return None
        made = [r for r in refunds if r.status == "succeeded"]
        found = ",".join(f"{r.id}:{r.status}" for r in refunds) or "none"
        await self.store.attempt(
            payment.payment_id,
            "lookup",
            "found" if made else "none",
            f"{refund.refund_id}: {found}",
            ms,
        )
        return made

    async def _defer(self, refund: Refund) -> None:
        await self.store.defer_refund(refund, recheck_after_s(self.config, refund.checks))


def _ours_to_send(refund: Refund) -> bool:
    """A recorded refund that is still the handler's: neither answered nor the reconciler's
    (a redelivery after a crash between recording it and hearing from the gateway)."""
    return refund.status == "requested" and refund.next_check_at is None
