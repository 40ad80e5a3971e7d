"""What the checks read, gathered once after the system settled (``chaos.scenario`` gathers it).

The payments and payouts as the API reports them, the gateway's charges, authorizations and
payouts, the whole event log, what the webhook receiver got, what the ledger says (its check,
balances and the journal of the merchants' accounts), and what each consumer group recorded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from chaos.eventlog import Logged
from chaos.load import Sent
from chaos.receiver import Receipt
from workers.core.events import Event

Violations = list[str]


@dataclass(frozen=True)
class JournalEntry:
    """One ledger entry on a merchant's account (``merchant_payable``)."""

    merchant_id: str
    currency: str
    event_id: uuid.UUID
    direction: str  # debit | credit
    phase: str  # pending | posted
    amount: int
    payout: bool  # of a payout's transfer (its reservation, or the reservation's release)

    @property
    def signed(self) -> int:
        """What it adds to the merchant's balance (a credit account: credits add)."""
        return self.amount if self.direction == "credit" else -self.amount


@dataclass
class Evidence:
    payments: list[dict[str, Any]]  # every merchant's, as GET /v1/payments lists them
    sent: list[Sent]
    refunds: list[Sent]
    stuck_refunds: list[str]
    leftovers: list[str]  # what was still in flight when settling gave up
    charges: list[dict[str, Any]]
    log: list[Logged]
    dead_letter_topic: list[Logged]
    receipts: list[Receipt]
    failed_deliveries: list[str]
    ledger_check: dict[str, Any]
    balances: list[dict[str, Any]]
    ledger_dead_letters: list[str]
    recorded: dict[str, set[uuid.UUID]]  # consumer group -> event ids it recorded as applied
    lag: dict[str, int]
    merchants: list[str] = field(default_factory=list)
    acknowledged: set[uuid.UUID] = field(default_factory=set)  # events the relays saw acked
    actions: list[Sent] = field(default_factory=list)  # merchants' captures and cancels
    authorizations: list[dict[str, Any]] = field(default_factory=list)  # the gateway's
    unfinished_sagas: list[str] = field(default_factory=list)  # neither ended nor timed
    payouts: list[dict[str, Any]] = field(default_factory=list)  # as GET /v1/payouts lists them
    payout_requests: list[Sent] = field(default_factory=list)  # of a part of the balance
    overdrafts: list[Sent] = field(default_factory=list)  # of more than could ever be there
    gateway_payouts: list[dict[str, Any]] = field(default_factory=list)  # the simulator's
    api_balances: dict[str, dict[str, Any]] = field(default_factory=dict)  # GET /v1/balance
    journal: list[JournalEntry] = field(default_factory=list)  # merchant_payable's entries
    authorization_ttl_s: float = 0.0  # the stack's orchestrator.authorization_ttl_s
    # How much later than its TTL an authorization may be released under the faults: the
    # scenario's own bound on recovering from one.
    release_grace_s: float = 0.0

    def events(self) -> dict[uuid.UUID, Event]:
        """Each event once (the relay publishes at least once, so some appear twice)."""
        return {m.event.event_id: m.event for m in self.log if m.event is not None}


def received(payment: dict[str, Any]) -> int:
    """What a succeeded payment took: all of it, or what a partial capture took."""
    return int(payment.get("amount_received") or payment["amount"])


def paid_out(payouts: list[dict[str, Any]]) -> dict[str, int]:
    """Per merchant: what its payouts paid, as the API lists them (one currency: the load's)."""
    paid: dict[str, int] = {}
    for p in payouts:
        if p["status"] == "paid":
            paid[p["merchant_id"]] = paid.get(p["merchant_id"], 0) + int(p["amount"])
    return paid
