"""The reconciler: settles the outcomes the gateway left unknown, and watches for late charges.

A payment is never reported failed while the gateway holds a charge for it: an unknown outcome
is re-checked on a backoff schedule (charged again with the same key while younger than
``processor.unknown_deadline_s``, which finds a charge made before rather than making one);
past the deadline with no charge found it fails with ``gateway_timeout``, and a charge that
lands after that, within ``processor.late_charge_window_s``, is refunded and reported as
``payment.charge_reversed``. Refunds whose outcome is unknown are re-checked here too
(``workers.processor.refunds``), payments the gateway holds unsettled, waiting for the
customer or processing (``workers.processor.waits``), and payouts in transit
(``workers.processor.payouts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Final

from workers.core.ids import derived_key
from workers.core.observe import following_up
from workers.processor.charging import Charging
from workers.processor.gateway import GatewayCharge, RefundDone, timed
from workers.processor.payouts import Payouts
from workers.processor.refunds import Refunds
from workers.processor.schedule import watch_over
from workers.processor.settlements import Defer, Settle
from workers.processor.states import State
from workers.processor.store import Payment
from workers.processor.waits import Waits

log = logging.getLogger(__name__)

RECONCILE_BATCH: Final = 100


class Reconciler:
    def __init__(self, charging: Charging, refunds: Refunds, waits: Waits) -> None:
        self.charging = charging
        self.refunds = refunds
        self.waits = waits
        self.store = charging.store
        # The gateway of every operation (the same client as charging's), which looks payouts up.
        self.payouts = Payouts(charging.store, waits.gateway)
        self.gateway = charging.gateway
        self.config = charging.config

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.once()
            except Exception:
                log.exception("reconciler pass failed; trying again next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.reconcile_interval_s)

    async def once(self) -> int:
        """Re-check every payment, refund and payout whose check is due; returns how many it
        looked at."""
        lease_s = max(60.0, self.config.recheck_first_s)
        due = await self.store.claim_due(RECONCILE_BATCH, lease_s)
        refunds = await self.store.claim_due_refunds(RECONCILE_BATCH, lease_s)
        payouts = await self.store.claim_due_payouts(RECONCILE_BATCH, lease_s)
        await asyncio.gather(
            *(self._recheck(payment_id) for payment_id in due),
            *(self.refunds.recheck(refund_id) for refund_id in refunds),
            *(self.payouts.recheck(payout_id, self.config) for payout_id in payouts),
        )
        return len(due) + len(refunds) + len(payouts)

    async def _recheck(self, payment_id: str) -> None:
        payment = await self.store.get(payment_id)
        if payment is None:
            return
        with following_up(
            "reconciler check",
            payment.traceparent,
            payment_id=payment_id,
            correlation_id=payment.correlation_id,
        ):
            await self._recheck_payment(payment)

    async def _recheck_payment(self, payment: Payment) -> None:
        if payment.state == State.REQUIRES_ACTION or (
            payment.state == State.PROCESSING and payment.charge_id is not None
        ):
            await self.waits.recheck(payment)  # the gateway holds the charge: look it up by id
        elif payment.state == State.PROCESSING:
            await self._recheck_unknown(payment)
        elif payment.state == State.FAILED:
            await self._watch_for_late_charge(payment)
        else:
            await self.store.release(payment.payment_id)

    async def _recheck_unknown(self, payment: Payment) -> None:
        if _age_s(payment.created_at) < self.config.unknown_deadline_s:
            await self.charging.charge(payment)  # same key: finds a charge made, else makes it
            return
        charges, looked = await self.charging.look_up(payment)
        verdict: Settle | Defer
        if charges is None:  # no answer: never guess "failed"
            verdict = Defer(self.charging.delay(payment))
        else:
            found = self.charging.verdict_from(payment, charges)
            verdict = found or self.charging.watched_failure(payment)
        await self.charging.settle(payment, [looked], verdict)

    async def _watch_for_late_charge(self, payment: Payment) -> None:
        """Look for a charge that landed after the payment failed; refund one found.

        The watch ends at the first check past the window that finds no charge; a charge
        found is refunded however long that takes, never left to stand."""
        if payment.reversed_charge_id:
            await self.store.release(payment.payment_id)
            return
        # The window is over only for a lookup asked after its end: one asked just before the
        # end and answered after it could miss a charge made in between.
        asked_at = _now()
        charges, looked = await self.charging.look_up(payment)
        await self.store.attempt(
            payment.payment_id, looked.kind, looked.outcome, looked.detail, looked.duration_ms
        )
        late = [c for c in charges or () if c.status == "succeeded"]
        if late:
            await self._reverse(payment, late[0])
        elif charges is not None and watch_over(self.config, _failed_at(payment), asked_at):
            await self.store.release(payment.payment_id)
        else:
            await self.store.defer(payment, self.charging.delay(payment))

    async def _reverse(self, payment: Payment, charge: GatewayCharge) -> None:
        outcome, ms = await timed(
            self.gateway.refund(charge.id, charge.amount, derived_key("reversal", charge.id))
        )
        await self.store.record(payment.payment_id, "reversal", outcome, ms)
        if isinstance(outcome, RefundDone):
            await self.store.reversed(payment, charge.id, charge.amount)
        else:
            await self.store.defer(payment, self.charging.delay(payment))


def _age_s(moment: datetime) -> float:
    return (_now() - moment).total_seconds()


def _now() -> datetime:
    return datetime.now(UTC)


def _failed_at(payment: Payment) -> datetime:
    # Every failed payment has settled_at (rows from before the column were given theirs).
    return payment.settled_at or payment.updated_at
