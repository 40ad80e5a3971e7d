"""What the processor does with each event, and how it settles outcomes the gateway left unknown.

Its one rule: a payment is never charged twice (every call carries the payment's idempotency
key), and it is never reported failed while the gateway holds a charge for it (an unknown
outcome is looked up, re-checked on a backoff schedule, and a charge that lands after a
``gateway_timeout`` failure, within ``processor.late_charge_window_s``, is refunded and
reported as ``payment.charge_reversed``). Refunds are in ``workers.processor.refunds``; the
reconciler here re-checks both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from workers.core.config import Settings
from workers.core.delivery import headers_of
from workers.core.events import Event, EventType, header
from workers.core.ids import derived_key
from workers.core.kafka import Message
from workers.core.observe import following_up
from workers.processor.gateway import (
    Charged,
    ChargeOutcome,
    ChargeRequest,
    Declined,
    Gateway,
    GatewayCharge,
    GatewayUnreachable,
    RefundDone,
    Rejected,
    Unknown,
    timed,
)
from workers.processor.refunds import Refunds
from workers.processor.schedule import recheck_after_s, watch_over
from workers.processor.states import State
from workers.processor.store import Payment, ProcessorStore

log = logging.getLogger(__name__)

RECONCILE_BATCH: Final = 100
# Every event type but the two ``handle`` acts on; a message without the header is decoded.
IGNORED: Final = frozenset(
    t.value for t in EventType if t not in (EventType.INITIATED, EventType.REFUND_REQUESTED)
)


class Processor:
    def __init__(self, settings: Settings, store: ProcessorStore, gateway: Gateway) -> None:
        self.config = settings.processor
        self.store = store
        self.gateway = gateway
        self.refunds = Refunds(settings, store, gateway)

    @staticmethod
    def wants(message: Message) -> bool:
        """False for the events the processor emits itself (and others it does nothing with),
        told by their ce_type header, so they cost no decoding and no slot in flight."""
        return header(headers_of(message), "ce_type") not in IGNORED

    async def handle(self, event: Event, _message: Message) -> None:
        """The consumer's handler; events the processor emits itself come back and are skipped."""
        if event.type is EventType.INITIATED:
            await self.on_initiated(event)
        elif event.type is EventType.REFUND_REQUESTED:
            await self.refunds.on_requested(event)

    # --- charges ---------------------------------------------------------------------------

    async def on_initiated(self, event: Event) -> None:
        payment = await self.store.start(event)
        # On redelivery: settled payments are done; deferred ones belong to the reconciler.
        if payment.state == State.PROCESSING and payment.next_check_at is None:
            await self.charge(payment)

    async def charge(self, payment: Payment) -> None:
        request = ChargeRequest(
            payment.payment_id, payment.amount, payment.currency, payment.payment_method
        )
        outcome, ms = await timed(self.gateway.charge(request))
        await self.store.record(payment.payment_id, "charge", outcome, ms)
        if not await self._settle(payment, outcome):
            await self.look_up(payment)

    async def _settle(self, payment: Payment, outcome: ChargeOutcome) -> bool:
        """Act on a definite outcome; False when the outcome is unknown."""
        match outcome:
            case Charged(charge_id):
                await self.store.succeed(payment, charge_id)
            case Declined(code):
                await self.store.fail(payment, code, None)
            case Rejected(detail):
                log.error("gateway refused the charge of %s: %s", payment.payment_id, detail)
                await self.store.fail(payment, "gateway_error", None)
            case Unknown():
                return False
        return True

    async def look_up(self, payment: Payment) -> None:
        """After an unknown outcome: a charge found settles it; else the reconciler re-checks."""
        charges = await self._find(payment)
        if charges is None or not await self._settle_from(payment, charges):
            await self.store.defer(payment, self._delay(payment))

    async def _settle_from(self, payment: Payment, charges: list[GatewayCharge]) -> bool:
        charged = [c for c in charges if c.status == "succeeded"]
        if charged:
            await self.store.succeed(payment, charged[0].id)
            return True
        declined = [c for c in charges if c.status == "declined"]
        if declined:
            await self.store.fail(payment, declined[0].decline_code or "card_declined", None)
            return True
        return False

    async def _find(self, payment: Payment) -> list[GatewayCharge] | None:
        try:
            charges, ms = await timed(self.gateway.find_charges(payment.payment_id))
        except GatewayUnreachable as exc:
            await self.store.attempt(payment.payment_id, "lookup", "unreachable", str(exc), 0)
            return None
        found = ",".join(f"{c.id}:{c.status}" for c in charges) or None
        await self.store.attempt(
            payment.payment_id, "lookup", "found" if charges else "none", found, ms
        )
        return list(charges)

    # --- the reconciler --------------------------------------------------------------------

    async def reconcile_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconciler pass failed; trying again next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.reconcile_interval_s)

    async def reconcile_once(self) -> int:
        """Re-check every payment and refund whose check is due; returns how many it looked at."""
        lease_s = max(60.0, self.config.recheck_first_s)
        due = await self.store.claim_due(RECONCILE_BATCH, lease_s)
        refunds = await self.store.claim_due_refunds(RECONCILE_BATCH, lease_s)
        await asyncio.gather(
            *(self._recheck(payment_id) for payment_id in due),
            *(self.refunds.recheck(refund_id) for refund_id in refunds),
        )
        return len(due) + len(refunds)

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
        if payment.state == State.PROCESSING:
            await self._recheck_unknown(payment)
        elif payment.state == State.FAILED:
            await self._watch_for_late_charge(payment)
        else:
            await self.store.release(payment.payment_id)

    async def _recheck_unknown(self, payment: Payment) -> None:
        if _age_s(payment.created_at) < self.config.unknown_deadline_s:
            await self.charge(payment)  # same key: finds the charge if it was made, else makes it
            return
        charges = await self._find(payment)
        if charges is None:
            await self.store.defer(payment, self._delay(payment))  # no answer: never guess "failed"
        elif not await self._settle_from(payment, charges):
            watch = datetime.now(UTC) + timedelta(seconds=self.config.recheck_first_s)
            await self.store.fail(payment, "gateway_timeout", watch)

    async def _watch_for_late_charge(self, payment: Payment) -> None:
        """Look for a charge that landed after the payment failed; refund one found.

        The watch ends at the first check past the window that finds no charge; a charge
        found is refunded however long that takes, never left to stand."""
        if payment.reversed_charge_id:
            await self.store.release(payment.payment_id)
            return
        charges = await self._find(payment)
        late = [c for c in charges or () if c.status == "succeeded"]
        if late:
            await self._reverse(payment, late[0])
        elif charges is not None and watch_over(self.config, _failed_at(payment), _now()):
            await self.store.release(payment.payment_id)
        else:
            await self.store.defer(payment, self._delay(payment))

    async def _reverse(self, payment: Payment, charge: GatewayCharge) -> None:
        outcome, ms = await timed(
            self.gateway.refund(charge.id, charge.amount, derived_key("reversal", charge.id))
        )
        await self.store.record(payment.payment_id, "reversal", outcome, ms)
        if isinstance(outcome, RefundDone):
            await self.store.reversed(payment, charge.id, charge.amount)
        else:
            await self.store.defer(payment, self._delay(payment))

    def _delay(self, payment: Payment) -> float:
        return recheck_after_s(self.config, payment.checks)


def _age_s(moment: datetime) -> float:
    return (_now() - moment).total_seconds()


def _now() -> datetime:
    return datetime.now(UTC)


def _failed_at(payment: Payment) -> datetime:
    # Every failed payment has settled_at (rows from before the column were given theirs).
    return payment.settled_at or payment.updated_at
