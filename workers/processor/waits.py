"""Payments the gateway holds unsettled, re-checked by the reconciler: waiting for the customer
(``requires_action``: 3-D Secure, of a charge or of a manual payment's authorization) or
processing at the gateway (a payment method that settles later, its charge id known).

Each check looks the charge up by its id. A charge that has settled settles the payment; a
manual payment's authorization the customer completed moves it on to ``requires_capture``; one
still waiting for the customer is asked again on the re-check schedule until
``processor.requires_action_timeout_s`` from when the wait began, and then canceled at the
gateway (so the customer can no longer complete it) and failed with ``action_expired``; one
still processing is asked ``processor.pending_max_checks`` times, then left to the gateway's
webhook (``workers.processor.reports``). A check without an answer is tried again later, never
taken for a decline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from workers.core.events import EventType, RequiresCapture
from workers.processor.charging import Charging, failed, succeeded
from workers.processor.gateway import (
    AwaitingCustomer,
    Charged,
    Declined,
    GatewayUnreachable,
    Pending,
    timed,
)
from workers.processor.operations import (
    Authorized,
    Canceled,
    GatewayPayment,
    OperationsGateway,
    cancel_key,
)
from workers.processor.settlements import Attempt, Defer, Settle, attempt_of
from workers.processor.states import Move, State, apply
from workers.processor.store import Payment, event_row

log = logging.getLogger(__name__)

AUTHORIZED = apply(State.REQUIRES_ACTION, Move.AUTHORIZE)


@dataclass(frozen=True)
class Expire:
    """A customer's wait is over with the charge still waiting: cancel it, then fail."""


Verdict = Settle | Defer


class Waits:
    def __init__(self, charging: Charging, gateway: OperationsGateway) -> None:
        self.charging = charging
        self.gateway = gateway
        self.config = charging.config

    async def recheck(self, payment: Payment) -> None:
        """Look the payment's charge up, and settle, expire or defer the payment."""
        assert payment.charge_id is not None, "a wait is for a charge the gateway holds"
        attempts: list[Attempt] = []
        try:
            found, ms = await timed(self.gateway.look_up(payment.payment_id, payment.charge_id))
        except GatewayUnreachable as exc:
            attempts.append(Attempt("lookup", "unreachable", str(exc), 0))
            verdict: Verdict | Expire = Defer(self.charging.delay(payment))
        else:
            attempts.append(_looked(found, ms))
            verdict = self.verdict(payment, found[0] if found else None, _now())
        if isinstance(verdict, Expire):
            verdict = await self._expire(payment, payment.charge_id, attempts)
        await self.charging.settle(payment, attempts, verdict)

    def verdict(
        self, payment: Payment, found: GatewayPayment | None, now: datetime
    ) -> Verdict | Expire:
        """What the gateway's record of the charge settles; Expire once a customer's wait is
        over with the charge still waiting."""
        outcome = None if found is None else found.outcome
        match outcome:
            case Charged(charge_id):
                return succeeded(payment, charge_id)
            case Declined(code):
                return failed(payment, code)
            case Pending(charge_id):
                return self.charging.pending(payment, charge_id)
            case AwaitingCustomer() if payment.state == State.PROCESSING:
                return self.charging.awaiting(payment, outcome)
            case Authorized(charge_id) if held(payment):
                return authorized(payment, charge_id)
            case Canceled():
                # Canceled at the gateway (by an operator, or an expiry half done): nothing
                # can be charged any more.
                waited = payment.state == State.REQUIRES_ACTION
                return failed(payment, "action_expired" if waited else "gateway_error")
        if payment.state != State.REQUIRES_ACTION:
            # Held, canceled or not found: nothing the payment can settle by yet.
            return Defer(self.charging.delay(payment))
        left = self.wait_left_s(payment, now)
        if left <= 0:
            return Expire()
        return Defer(min(self.charging.delay(payment), left))

    def wait_left_s(self, payment: Payment, now: datetime) -> float:
        """How long a payment at requires_action may still wait for its customer."""
        began = payment.settled_at or payment.updated_at
        return self.config.requires_action_timeout_s - (now - began).total_seconds()

    async def _expire(self, payment: Payment, charge_id: str, attempts: list[Attempt]) -> Verdict:
        """Cancel the charge at the gateway, then fail the payment; if the gateway will not
        cancel it (the customer completed it meanwhile), the next look-up tells what it is."""
        outcome, ms = await timed(self.gateway.cancel(charge_id, cancel_key(payment.payment_id)))
        attempts.append(attempt_of("cancel", outcome, ms))
        if isinstance(outcome, Canceled):
            log.info("payment %s: the customer did not act in time", payment.payment_id)
            return failed(payment, "action_expired")
        return Defer(self.charging.delay(payment))


def held(payment: Payment) -> bool:
    """Whether the gateway holding the payment's funds moves it on: a manual payment whose
    customer was authenticating (an automatic one is never left held)."""
    return payment.state == State.REQUIRES_ACTION and payment.capture_method == "manual"


def authorized(payment: Payment, charge_id: str) -> Settle:
    """requires_action -> requires_capture: the customer authenticated a manual payment, whose
    hold now waits for the merchant's capture or cancel (``payment.requires_capture`` answers
    the payment saga's authorize step, as an authorization without 3-D Secure does)."""
    hold = RequiresCapture(authorization_id=charge_id, amount_capturable=payment.amount)
    row = event_row(payment.payment_id, payment.merchant_id, payment.correlation_id,
                    EventType.REQUIRES_CAPTURE, hold)  # fmt: skip
    return Settle(AUTHORIZED, charge_id, None, None, row)


def _looked(found: list[GatewayPayment], ms: int) -> Attempt:
    detail = ",".join(f"{p.charge_id}:{type(p.outcome).__name__.lower()}" for p in found)
    return Attempt("lookup", "found" if found else "none", detail or None, ms)


def _now() -> datetime:
    return datetime.now(UTC)
