"""The chart of accounts and the posting rule of every event type. Pure: no I/O.

Chart of accounts (one account per code and currency; merchant accounts also per merchant)::

    account                     owner     normal side  what its balance means
    gateway_receivable:<CUR>    house     debit        what the gateway owes FlowPay for charges
    refunds_paid:<CUR>          house     credit       paid back to cardholders through the
                                                       gateway (a contra account: the gateway
                                                       owes gateway_receivable - refunds_paid)
    suspense:<CUR>              house     credit       money held that belongs to no payment
                                                       (a late charge until it is returned)
    merchant_payable:<M>:<CUR>  merchant  credit       what FlowPay owes merchant <M>
    authorization_holds:<CUR>   house     debit        what cards hold for payments authorized
                                                       with manual capture, not yet captured
                                                       or released (pending entries only)
    payouts_in_transit:<CUR>    house     credit       merchants' payouts reserved and on their
                                                       way through the gateway, not yet paid
                                                       or failed (pending entries only)
    payouts_paid:<CUR>          house     credit       paid out to merchants through the
                                                       gateway (a contra account, as
                                                       refunds_paid: the gateway owes
                                                       gateway_receivable - refunds_paid -
                                                       payouts_paid)

Every entry is in one of two phases, as TigerBeetle's two-phase transfers: ``pending`` (an
amount reserved while the outcome is open) or ``posted`` (final). Each journal transaction
balances per currency and phase (the database refuses any other at commit).

Posting rules (A = the payment's amount, C = what a manual capture took, R = a refund's amount,
X = a late charge's amount, P = a payout's amount; a payout's events are keyed by its id as a
payment's are, and its reservation is its pending transfer)::

    payment.initiated         authorize (pending): Dr gateway_receivable A / Cr merchant_payable A
    payment.authorization_requested
                              authorize, a hold (pending):
                                Dr authorization_holds A / Cr merchant_payable A
    payment.succeeded         of a charge: post (resolves the pending transfer, once):
                                pending: Dr merchant_payable A / Cr gateway_receivable A
                                posted:  Dr gateway_receivable A / Cr merchant_payable A
                              of a hold: capture (resolves it, once; A - C is released):
                                pending: Dr merchant_payable A / Cr authorization_holds A
                                posted:  Dr gateway_receivable C / Cr merchant_payable C
    payment.failed, payment.canceled
                              void (resolves the pending transfer or hold, once):
                                pending: Dr merchant_payable A / Cr gateway_receivable A
                                (or Cr authorization_holds A)
    payment.refunded          refund (posted): Dr merchant_payable R / Cr refunds_paid R
                              (R at most what was posted, A or C, less earlier refunds)
    payment.charge_reversed   late_charge (posted):     Dr gateway_receivable X / Cr suspense X
                              charge_reversal (posted): Dr suspense X / Cr refunds_paid X
                              (the two transfers net to zero: suspense ends at 0, and the
                              gateway owes nothing for a charge it already gave back)
    payout.requested          authorize, a payout's reservation (pending):
                                Dr merchant_payable P / Cr payouts_in_transit P
    payout.paid               post (resolves the reservation, once):
                                pending: Dr payouts_in_transit P / Cr merchant_payable P
                                posted:  Dr merchant_payable P / Cr payouts_paid P
    payout.failed             void (resolves the reservation, once: the saga's compensation):
                                pending: Dr payouts_in_transit P / Cr merchant_payable P
    payment.processing, payment.requires_action, payment.requires_capture,
    payment.capture_requested, payment.cancel_requested, payment.refund_requested,
    payment.refund_failed, gateway.reported
                              nothing; the event is still recorded as applied

An event the rules cannot apply (a payment never initiated, resolved twice, a refund above what
is left, ...) raises ``PostingRefused``: the message is dead-lettered, never half-posted.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol, assert_never

from workers.core.errors import PermanentError
from workers.core.events import (
    PAYOUT_EVENTS,
    ChargeReversed,
    Event,
    EventType,
    Initiated,
    PayoutPaid,
    PayoutRequested,
    Refunded,
    Succeeded,
)


class Kind(StrEnum):
    AUTHORIZE = "authorize"
    POST = "post"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    LATE_CHARGE = "late_charge"
    CHARGE_REVERSAL = "charge_reversal"


class Direction(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class Phase(StrEnum):
    PENDING = "pending"
    POSTED = "posted"


class Code(StrEnum):
    GATEWAY_RECEIVABLE = "gateway_receivable"
    REFUNDS_PAID = "refunds_paid"
    SUSPENSE = "suspense"
    MERCHANT_PAYABLE = "merchant_payable"
    AUTHORIZATION_HOLDS = "authorization_holds"
    PAYOUTS_IN_TRANSIT = "payouts_in_transit"
    PAYOUTS_PAID = "payouts_paid"


# The kinds that resolve a pending transfer (once): in full, in part, or not at all.
RESOLUTIONS: Final = frozenset({Kind.POST, Kind.CAPTURE, Kind.VOID})

NORMAL_SIDE: Final[dict[Code, Direction]] = {
    Code.GATEWAY_RECEIVABLE: Direction.DEBIT,
    Code.REFUNDS_PAID: Direction.CREDIT,
    Code.SUSPENSE: Direction.CREDIT,
    Code.MERCHANT_PAYABLE: Direction.CREDIT,
    Code.AUTHORIZATION_HOLDS: Direction.DEBIT,
    Code.PAYOUTS_IN_TRANSIT: Direction.CREDIT,
    Code.PAYOUTS_PAID: Direction.CREDIT,
}

# Journal transaction ids derive from the event id, so a replay rebuilds the very same ids.
_TXN_NAMESPACE: Final = uuid.UUID("6f1c2b7e-5d0a-4c55-9a43-4c1e0d6b8a11")
_TXN_NAMESPACE_BYTES: Final = _TXN_NAMESPACE.bytes  # a property that builds them on each call


class PostingRefused(PermanentError):
    """The event cannot be posted given what the ledger holds for its payment."""


@dataclass(frozen=True, slots=True)
class Account:
    code: Code
    currency: str
    merchant_id: str | None = None
    # Its row's key, asked for every line a batch writes: made once.
    id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        account_id = (
            f"{self.code}:{self.currency}"
            if self.merchant_id is None
            else f"{self.code}:{self.merchant_id}:{self.currency}"
        )
        object.__setattr__(self, "id", account_id)

    @property
    def normal_side(self) -> Direction:
        return NORMAL_SIDE[self.code]


# Accounts are values: each is made once (per merchant and currency, within a bound) and shared.
@functools.lru_cache(maxsize=256)
def house(code: Code, currency: str) -> Account:
    return Account(code, currency)


@functools.lru_cache(maxsize=65536)
def merchant_payable(merchant_id: str, currency: str) -> Account:
    return Account(Code.MERCHANT_PAYABLE, currency, merchant_id)


@dataclass(frozen=True, slots=True)
class Line:
    account: Account
    direction: Direction
    phase: Phase
    amount: int

    @property
    def currency(self) -> str:
        return self.account.currency


@dataclass(frozen=True, slots=True)
class Transfer:
    """One journal transaction to write. ``resolves``: the pending transfer it posts or voids."""

    kind: Kind
    lines: tuple[Line, ...]
    reference: str | None = None
    resolves: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A payment's pending transfer, as the authorize transaction booked it: its debit on
    ``gateway_receivable`` (a charge), ``authorization_holds`` (a hold, manual capture) or
    ``merchant_payable`` (a payout's reservation)."""

    txn_id: uuid.UUID
    merchant_id: str
    currency: str
    amount: int
    account: Code = Code.GATEWAY_RECEIVABLE

    @property
    def payout(self) -> bool:
        return self.account is Code.MERCHANT_PAYABLE


@dataclass(frozen=True, slots=True)
class PaymentState:
    """What the ledger holds for one payment; derived from its journal transactions."""

    pending: Pending | None = None
    resolution: Kind | None = None
    refunded: int = 0
    # (kind, reference) of its transfers that carry one: refund ids, reversed charge ids.
    references: frozenset[tuple[Kind, str]] = field(default_factory=frozenset)
    # What its resolution posted: the whole amount (post), what a capture took, 0 (void).
    captured: int = 0

    def after(self, txn_id: uuid.UUID, transfer: Transfer, merchant_id: str) -> PaymentState:
        """The state once ``transfer`` is written (mirrors the ``payment_states`` query)."""
        amount = transfer_amount(transfer)
        # One new state built directly: dataclasses.replace, once or twice per transfer, cost
        # more than the rest of this method.
        pending, resolution, refunded = self.pending, self.resolution, self.refunded
        references, captured = self.references, self.captured
        if transfer.reference is not None:
            references = references | {(transfer.kind, transfer.reference)}
        if transfer.kind is Kind.AUTHORIZE:
            currency = transfer.lines[0].currency if transfer.lines else ""
            debited = transfer.lines[0].account.code if transfer.lines else Code.GATEWAY_RECEIVABLE
            pending = Pending(txn_id, merchant_id, currency, amount, debited)
        elif transfer.kind in RESOLUTIONS:
            resolution = transfer.kind
            captured = posted_amount(transfer)
        elif transfer.kind is Kind.REFUND:
            refunded += amount
        return PaymentState(pending, resolution, refunded, references, captured)

    @property
    def posted(self) -> int:
        """What was charged and may be refunded: what the resolution posted."""
        return self.captured if self.pending else 0


def transfer_amount(transfer: Transfer) -> int:
    """A transfer's amount: its debits in the phase that moves most (see ``txn_amount`` SQL)."""
    per_phase: dict[Phase, int] = {}
    for line in transfer.lines:
        if line.direction is Direction.DEBIT:
            per_phase[line.phase] = per_phase.get(line.phase, 0) + line.amount
    return max(per_phase.values(), default=0)


def posted_amount(transfer: Transfer) -> int:
    """A transfer's debits in the posted phase (see the ``payment_states`` SQL)."""
    return sum(
        line.amount
        for line in transfer.lines
        if line.direction is Direction.DEBIT and line.phase is Phase.POSTED
    )


def transaction_id(event_id: uuid.UUID, index: int) -> uuid.UUID:
    """uuid.uuid5(_TXN_NAMESPACE, f"{event_id}/{index}"), its steps with the namespace's bytes
    taken once (a replay derives an id per transaction)."""
    name = f"{event_id}/{index}".encode()
    sha1 = hashlib.sha1(_TXN_NAMESPACE_BYTES + name, usedforsecurity=False).digest()
    return uuid.UUID(bytes=sha1[:16], version=5)


def move(debit: Account, credit: Account, amount: int, phase: Phase) -> tuple[Line, Line]:
    """A debit and the credit that balances it."""
    return (
        Line(debit, Direction.DEBIT, phase, amount),
        Line(credit, Direction.CREDIT, phase, amount),
    )


class PostingRules(Protocol):
    """Turns one event, given its payment's state, into the transfers to write."""

    def transfers(self, event: Event, state: PaymentState) -> Sequence[Transfer]: ...


class StandardRules:
    """FlowPay's posting rules, as the module docstring states them."""

    def transfers(self, event: Event, state: PaymentState) -> Sequence[Transfer]:
        match event.type:
            case EventType.INITIATED:
                return [self.authorize(event, state, Code.GATEWAY_RECEIVABLE)]
            case EventType.AUTHORIZATION_REQUESTED:
                return [self.authorize(event, state, Code.AUTHORIZATION_HOLDS)]
            case EventType.SUCCEEDED:
                return [self.settle(event, _unresolved(event, state))]
            case EventType.FAILED | EventType.CANCELED:
                return [self.void(event, _unresolved(event, state))]
            case EventType.REFUNDED:
                return [self.refund(event, state)]
            case EventType.PAYOUT_REQUESTED:
                return [self.reserve_payout(event, state)]
            case EventType.PAYOUT_PAID:
                return [self.pay_out(event, _unresolved(event, state))]
            case EventType.PAYOUT_FAILED:
                return [self.void(event, _unresolved(event, state))]
            case EventType.CHARGE_REVERSED:
                return self.charge_reversed(event, state)
            case (
                EventType.PROCESSING
                | EventType.REQUIRES_CAPTURE
                # The charge waits for the customer: its pending transfer stands until the
                # outcome (payment.succeeded or payment.failed) resolves it.
                | EventType.REQUIRES_ACTION
                | EventType.CAPTURE_REQUESTED
                | EventType.CANCEL_REQUESTED
                | EventType.REFUND_REQUESTED
                | EventType.REFUND_FAILED
                # A gateway's report moves nothing until the processor settles by it.
                | EventType.GATEWAY_REPORTED
            ):
                return []  # nothing moves; the event is recorded as applied
            case unknown:  # mypy: no event type left without a rule
                assert_never(unknown)

    def authorize(self, event: Event, state: PaymentState, debited: Code) -> Transfer:
        """The pending transfer of a payment: a charge's, or a hold's (manual capture)."""
        if state.pending is not None:
            raise PostingRefused(f"{event.payment_id} already has a pending transfer")
        data = event.payload(Initiated)
        payable = merchant_payable(event.merchant_id, data.currency)
        lines = move(house(debited, data.currency), payable, data.amount, Phase.PENDING)
        return Transfer(Kind.AUTHORIZE, lines)

    def reserve_payout(self, event: Event, state: PaymentState) -> Transfer:
        """A payout's reservation: taken from what the merchant is owed until it is paid."""
        if state.pending is not None:
            raise PostingRefused(f"payout {event.payment_id} already has a pending transfer")
        data = event.payload(PayoutRequested)
        payable = merchant_payable(event.merchant_id, data.currency)
        in_transit = house(Code.PAYOUTS_IN_TRANSIT, data.currency)
        return Transfer(Kind.AUTHORIZE, move(payable, in_transit, data.amount, Phase.PENDING))

    def pay_out(self, event: Event, pending: Pending) -> Transfer:
        paid = event.payload(PayoutPaid).amount
        if paid != pending.amount:
            raise PostingRefused(f"payout {event.payment_id} of {pending.amount} paid {paid}")
        payable = merchant_payable(pending.merchant_id, pending.currency)
        paid_out = house(Code.PAYOUTS_PAID, pending.currency)
        lines = _release(pending) + move(payable, paid_out, paid, Phase.POSTED)
        return Transfer(Kind.POST, lines, resolves=pending.txn_id)

    def settle(self, event: Event, pending: Pending) -> Transfer:
        """A success: a charge posted in full, or a hold captured (in part, the rest released)."""
        captured = event.payload(Succeeded).amount_captured
        if pending.account is Code.AUTHORIZATION_HOLDS:
            return self.capture(event, pending, pending.amount if captured is None else captured)
        if captured not in (None, pending.amount):
            raise PostingRefused(f"{event.payment_id}: a charge of {pending.amount} captured")
        return self.post(event, pending)

    def post(self, event: Event, pending: Pending) -> Transfer:
        receivable = house(Code.GATEWAY_RECEIVABLE, pending.currency)
        payable = merchant_payable(pending.merchant_id, pending.currency)
        lines = _release(pending) + move(receivable, payable, pending.amount, Phase.POSTED)
        return Transfer(Kind.POST, lines, resolves=pending.txn_id)

    def capture(self, event: Event, pending: Pending, amount: int) -> Transfer:
        if amount > pending.amount:
            raise PostingRefused(
                f"{event.payment_id}: captured {amount} of a hold of {pending.amount}"
            )
        receivable = house(Code.GATEWAY_RECEIVABLE, pending.currency)
        payable = merchant_payable(pending.merchant_id, pending.currency)
        lines = _release(pending) + move(receivable, payable, amount, Phase.POSTED)
        return Transfer(Kind.CAPTURE, lines, resolves=pending.txn_id)

    def void(self, event: Event, pending: Pending) -> Transfer:
        return Transfer(Kind.VOID, _release(pending), resolves=pending.txn_id)

    def refund(self, event: Event, state: PaymentState) -> Transfer:
        data = event.payload(Refunded)
        if state.pending is None or state.resolution not in (Kind.POST, Kind.CAPTURE):
            raise PostingRefused(f"refund {data.refund_id}: {event.payment_id} was never posted")
        if (Kind.REFUND, data.refund_id) in state.references:
            raise PostingRefused(f"refund {data.refund_id} is already posted")
        left = state.posted - state.refunded
        if data.amount > left:
            raise PostingRefused(f"refund {data.refund_id} of {data.amount} with {left} left")
        payable = merchant_payable(state.pending.merchant_id, state.pending.currency)
        paid = house(Code.REFUNDS_PAID, state.pending.currency)
        lines = move(payable, paid, data.amount, Phase.POSTED)
        return Transfer(Kind.REFUND, lines, reference=data.refund_id)

    def charge_reversed(self, event: Event, state: PaymentState) -> list[Transfer]:
        data = event.payload(ChargeReversed)
        if state.pending is None or state.resolution is not Kind.VOID:
            raise PostingRefused(f"charge {data.charge_id} reversed on a payment not voided")
        if (Kind.LATE_CHARGE, data.charge_id) in state.references:
            raise PostingRefused(f"charge {data.charge_id} is already recorded as reversed")
        currency = state.pending.currency
        suspense = house(Code.SUSPENSE, currency)
        charged = move(
            house(Code.GATEWAY_RECEIVABLE, currency), suspense, data.amount, Phase.POSTED
        )
        returned = move(suspense, house(Code.REFUNDS_PAID, currency), data.amount, Phase.POSTED)
        return [
            Transfer(Kind.LATE_CHARGE, charged, reference=data.charge_id),
            Transfer(Kind.CHARGE_REVERSAL, returned, reference=data.charge_id),
        ]


def _unresolved(event: Event, state: PaymentState) -> Pending:
    if state.pending is None:
        raise PostingRefused(f"{event.type} for {event.payment_id}, which has no pending transfer")
    if state.resolution is not None:
        raise PostingRefused(f"{event.type}: the pending transfer was already {state.resolution}")
    if state.pending.payout != (event.type in PAYOUT_EVENTS):
        raise PostingRefused(f"{event.type} for {event.payment_id}, whose pending transfer is not")
    return state.pending


def _release(pending: Pending) -> tuple[Line, Line]:
    """The pending transfer reversed: what post, capture and void write in the pending phase."""
    payable = merchant_payable(pending.merchant_id, pending.currency)
    if pending.payout:
        in_transit = house(Code.PAYOUTS_IN_TRANSIT, pending.currency)
        return move(in_transit, payable, pending.amount, Phase.PENDING)
    debited = house(pending.account, pending.currency)
    return move(payable, debited, pending.amount, Phase.PENDING)


STANDARD_RULES: Final = StandardRules()
