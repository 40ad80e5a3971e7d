"""Gateway operations beyond a charge and a refund: authorize, capture, cancel, pay out, look up.

``workers.processor.gateway`` holds what the processor calls today (``Gateway``: charge, refund,
find). The sagas (issue 15) drive a payment through more steps, and each step's outcome is a
type here, in the spirit of ``Charged``/``Declined``/``Rejected``/``Unknown``: a definite
answer, a refusal, or *unknown* (no answer: looked up, never taken for a decline).
``OperationsGateway`` is a gateway that does them all; the Stripe connector is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from workers.core.ids import derived_key

# A charge answers these too, so they are at home in gateway; re-exported for the operations.
from workers.processor.gateway import AwaitingCustomer as AwaitingCustomer
from workers.processor.gateway import Charged, ChargeRequest, Declined, Gateway, Rejected, Unknown
from workers.processor.gateway import NextAction as NextAction
from workers.processor.gateway import Pending as Pending


@dataclass(frozen=True)
class Authorized:
    """The funds are held (Stripe: ``requires_capture``): capture them, or cancel, later."""

    charge_id: str
    amount_capturable: int


@dataclass(frozen=True)
class Captured:
    charge_id: str
    amount: int  # what was captured; the rest of the authorization is released


@dataclass(frozen=True)
class Canceled:
    charge_id: str


@dataclass(frozen=True)
class PayoutRequest:
    payout_id: str  # FlowPay's: the idempotency key and the look-up reference derive from it
    merchant_id: str
    amount: int
    currency: str
    # The merchant's own account at the gateway (a Stripe Connect account), when payouts go
    # from it; None pays out of the platform's balance.
    account: str | None = None
    # The bank account (or card) paid into; None: the default one.
    destination: str | None = None


@dataclass(frozen=True)
class PayoutSent:
    gateway_payout_id: str
    status: str  # pending | in_transit | paid: in transit, a later report says paid or failed


@dataclass(frozen=True)
class PayoutFailed:
    gateway_payout_id: str
    code: str


# A payment's state at the gateway: what creating it answered, or what a look-up found.
PaymentOutcome = Charged | Authorized | AwaitingCustomer | Pending | Declined | Canceled
AuthorizeOutcome = PaymentOutcome | Rejected | Unknown
CaptureOutcome = Captured | Rejected | Unknown
CancelOutcome = Canceled | Rejected | Unknown
PayoutOutcome = PayoutSent | PayoutFailed | Rejected | Unknown
FoundPayout = PayoutSent | PayoutFailed


@dataclass(frozen=True)
class GatewayPayment:
    """A payment found by a look-up: its id, its state, what was asked and what was received."""

    charge_id: str
    outcome: PaymentOutcome
    amount: int
    amount_received: int


class CaptureGateway(Gateway, Protocol):
    """A gateway that also authorizes, captures and cancels: what manual capture needs (the
    simulator's client, ``workers.processor.authorizations``, and the Stripe connector)."""

    async def authorize(self, request: ChargeRequest) -> AuthorizeOutcome:
        """Create and confirm the payment, capturing as ``request.capture_method`` says."""
        ...

    async def capture(self, charge_id: str, amount: int | None, key: str) -> CaptureOutcome:
        """Capture ``amount`` (None: all) of an authorization; the rest is released."""
        ...

    async def cancel(self, charge_id: str, key: str) -> CancelOutcome: ...

    async def look_up(self, payment_id: str, charge_id: str | None = None) -> list[GatewayPayment]:
        """The payments made for ``payment_id``: by the gateway's id when known, else by
        FlowPay's reference; raises GatewayUnreachable without an answer."""
        ...


class OperationsGateway(CaptureGateway, Protocol):
    async def payout(self, request: PayoutRequest) -> PayoutOutcome: ...

    async def find_payout(self, payout_id: str, gateway_payout_id: str) -> FoundPayout:
        """A payout sent before, as the gateway has it now (by its id there, or by FlowPay's
        ``payout_id``); raises GatewayUnreachable without an answer, or if it has none."""
        ...


def authorize_key(payment_id: str) -> str:
    return derived_key("authorize", payment_id)


def capture_key(payment_id: str) -> str:
    return derived_key("capture", payment_id)


def cancel_key(payment_id: str) -> str:
    return derived_key("cancel", payment_id)


def payout_key(payout_id: str) -> str:
    return derived_key("payout", payout_id)
