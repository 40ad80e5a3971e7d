"""What the processor does with each event, and how it settles outcomes the gateway left unknown.

Its one rule: a payment is never charged twice (every call carries the payment's idempotency
key), and it is never reported failed while the gateway holds a charge for it (an unknown
outcome is looked up, re-checked on a backoff schedule, and a charge that lands after a
``gateway_timeout`` failure is refunded and reported as ``payment.charge_reversed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from workers.core.config import Settings
from workers.core.delivery import headers_of
from workers.core.errors import TransientError
from workers.core.events import Event, EventType, RefundRequested, header
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
    refund_key,
    timed,
)
from workers.processor.states import State
from workers.processor.store import Payment, ProcessorStore

log = logging.getLogger(__name__)

INVALID_STATE: Final = "invalid_state"
AMOUNT_TOO_LARGE: Final = "amount_exceeds_refundable"
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
            await self.on_refund_requested(event)

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
        await self._attempt(payment, "charge", outcome, ms)
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
        """Re-check every payment whose check is due; returns how many it looked at."""
        lease_s = max(60.0, self.config.recheck_first_s)
        due = await self.store.claim_due(RECONCILE_BATCH, lease_s)
        await asyncio.gather(*(self._recheck(payment_id) for payment_id in due))
        return len(due)

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
        if _age_s(payment.updated_at) > self.config.reversal_window_s or payment.reversed_charge_id:
            await self.store.release(payment.payment_id)
            return
        charges = await self._find(payment)
        late = [c for c in charges or () if c.status == "succeeded"]
        if not late:
            await self.store.defer(payment, self._delay(payment))
            return
        charge = late[0]
        outcome, ms = await timed(
            self.gateway.refund(charge.id, charge.amount, derived_key("reversal", charge.id))
        )
        await self._attempt(payment, "reversal", outcome, ms)
        if isinstance(outcome, RefundDone):
            await self.store.reversed(payment, charge.id, charge.amount)
        else:
            await self.store.defer(payment, self._delay(payment))

    def _delay(self, payment: Payment) -> float:
        return float(
            min(self.config.recheck_first_s * 2**payment.checks, self.config.recheck_max_s)
        )

    # --- refunds ---------------------------------------------------------------------------

    async def on_refund_requested(self, event: Event) -> None:
        data = event.payload(RefundRequested)
        refund = await self.store.refund(data.refund_id)
        if refund is not None and refund.status != "requested":
            return  # already answered
        payment = await self.store.get(event.payment_id)
        if refund is None:
            problem = _refund_problem(payment, data.amount)
            if problem is not None:
                await self.store.refund_refused(event, _correlation(payment, event), problem)
                return
            await self.store.refund_requested(event)
            refund = await self.store.refund(data.refund_id)
        assert payment is not None
        assert payment.charge_id is not None
        assert refund is not None
        outcome, ms = await timed(
            self.gateway.refund(payment.charge_id, refund.amount, refund_key(refund.refund_id))
        )
        await self._attempt(payment, "refund", outcome, ms)
        match outcome:
            case RefundDone(gateway_refund_id):
                await self.store.refund_succeeded(payment, refund, gateway_refund_id)
            case Rejected(detail):
                log.error("gateway refused refund %s: %s", refund.refund_id, detail)
                await self.store.refund_refused(event, payment.correlation_id, "gateway_rejected")
            case Unknown(reason):
                # Same refund key on every try, so retrying can never refund twice.
                raise TransientError(f"refund {refund.refund_id} outcome unknown ({reason})")

    async def _attempt(self, payment: Payment, kind: str, outcome: object, ms: int) -> None:
        name = type(outcome).__name__.lower()
        await self.store.attempt(payment.payment_id, kind, name, _detail(outcome), ms)


def _refund_problem(payment: Payment | None, amount: int) -> str | None:
    if payment is None or payment.state != State.SUCCEEDED:
        return INVALID_STATE
    if amount > payment.amount - payment.refunded_amount:
        return AMOUNT_TOO_LARGE
    return None


def _correlation(payment: Payment | None, event: Event) -> str:
    return payment.correlation_id if payment is not None else event.correlation_id


def _detail(outcome: object) -> str | None:
    for name in ("charge_id", "code", "detail", "reason", "refund_id"):
        value = getattr(outcome, name, None)
        if value is not None:
            return str(value)
    return None


def _age_s(moment: datetime) -> float:
    return (datetime.now(UTC) - moment).total_seconds()
