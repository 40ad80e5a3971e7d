"""Payments, refunds and payouts through the HTTP API, as merchants' clients send them, paced
over the run.

A client whose request got no answer (a dropped connection, a 5xx, the API down) sends it again
with the same idempotency key until it gets one; some requests are sent by an impatient client
that gives up at once, to make that happen on purpose. Every decision comes from one seeded
``random.Random``, drawn in payment order, so a seed gives the same load; payouts draw from one
of their own, and ask for a part of what the merchant's balance shows at that moment.

A payout never takes what a refund still to come may need: refunds are made whatever the
balance (as Stripe's), so one after a payout could take the balance below zero, which the
checks forbid. Each merchant's planned refunds (a full refund counted whole) are kept back
from what its payouts ask for.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from workers.api.client import TERMINAL, ApiClient, Reply
from workers.core.money import MAX_AMOUNT
from workers.gateway_sim.payouts import FAILING_DESTINATIONS

# Where a manual payment's authorization has ended up: held, or never held (declined).
AUTHORIZED = TERMINAL | {"requires_capture"}

T = TypeVar("T")
P = TypeVar("P")

# Stripe's test methods: most cards work, some are declined.
METHODS = ("pm_card_visa", "pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds")
METHOD_WEIGHTS = (80, 12, 8)
RETRY_FRACTION = 0.1  # sent first by a client that drops the connection before the answer
DUPLICATE_FRACTION = 0.05  # sent again after the answer, as a client that lost it would
REFUND_FRACTION = 0.12
# Authorized only (capture_method manual), then captured whole or in part, canceled, or left to
# expire (the stack's orchestrator.authorization_ttl_s is short).
MANUAL_FRACTION = 0.15
MANUAL_ENDINGS = ("capture", "partial", "cancel", "expire")
MANUAL_WEIGHTS = (45, 20, 20, 15)
GIVE_UP_S = 240.0
# Payouts: this many per payment sent, each for a part of the balance to a bank account that is
# paid, to one of the simulator's failing test accounts, or for more than every payment of the
# load together (sure to be refused, 422 insufficient_balance).
PAYOUT_FRACTION = 0.1
PAYOUT_KINDS = ("part", "failing", "overdraft")
PAYOUT_WEIGHTS = (60, 20, 20)
PAYOUT_PART = (0.1, 0.6)  # of what may be paid out
# The most the API takes: far more than all the load's payments together.
OVERDRAFT = MAX_AMOUNT


@dataclass(frozen=True)
class Merchant:
    id: str
    api_key: str
    webhook_secret: str


@dataclass
class Sent:
    """One request a client made, under one idempotency key, and what answered it."""

    key: str
    merchant_id: str
    body: dict[str, Any]
    ids: set[str] = field(default_factory=set)  # every id a 2xx answer carried
    outcome: str = "unanswered"  # accepted | rejected:<status>:<code> | unanswered
    resends: int = 0
    probe: bool = False

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


@dataclass(frozen=True)
class Plan:
    merchant: Merchant
    body: dict[str, Any]
    drop_first: bool
    duplicate: bool
    refund: int | None  # None: no refund; 0: a full refund; else that amount
    manual: str | None = None  # one of MANUAL_ENDINGS for a payment authorized only
    capture: int | None = None  # what a partial capture takes


@dataclass(frozen=True)
class PayoutPlan:
    merchant: Merchant
    kind: str  # one of PAYOUT_KINDS
    part: float  # of what may be paid out
    destination: str | None
    drop_first: bool
    duplicate: bool


class Load:
    def __init__(
        self,
        api_url: str,
        merchants: list[Merchant],
        *,
        payments: int,
        duration_s: float,
        seed: int,
    ) -> None:
        self.api_url = api_url
        self.merchants = merchants
        self.count = payments
        self.duration_s = duration_s
        self.rng = random.Random(f"load-{seed}")
        self.payments: list[Sent] = []
        self.refunds: list[Sent] = []
        self.actions: list[Sent] = []  # captures and cancels
        self.payouts: list[Sent] = []  # payouts of a part of the balance
        self.overdrafts: list[Sent] = []  # payouts of more than the balance could ever be
        self.payouts_skipped = 0  # planned when nothing could be paid out
        self._payout_rng = random.Random(f"payouts-{seed}")
        # Per merchant: what the refunds of its payments sent so far may take (never paid out).
        self._refunds_to_come: dict[str, int] = {m.id: 0 for m in merchants}
        self.done = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="load", daemon=True)
        self._clients: dict[str, ApiClient] = {}
        self._impatient: dict[str, ApiClient] = {}
        self._probes = 0

    # -- running it from the scenario's (synchronous) thread

    def start(self) -> None:
        self._thread.start()
        self._submit(self._open_clients()).result()
        self._submit(self._run())

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        result: T = self._submit(coroutine).result()
        return result

    def wait(self, timeout_s: float) -> bool:
        return self.done.wait(timeout_s)

    def close(self) -> None:
        self._submit(self._close_clients()).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    # -- the load itself

    async def _open_clients(self) -> None:
        for m in self.merchants:
            self._clients[m.id] = ApiClient(self.api_url, m.api_key, timeout_s=10)
            self._impatient[m.id] = ApiClient(self.api_url, m.api_key, timeout_s=0.005)

    async def _close_clients(self) -> None:
        for client in [*self._clients.values(), *self._impatient.values()]:
            await client.__aexit__()

    def _plan(self, index: int) -> Plan:
        rng = self.rng
        merchant = rng.choice(self.merchants)
        method = rng.choices(METHODS, METHOD_WEIGHTS)[0]
        amount = rng.randint(100, 50_000)
        drop_first = rng.random() < RETRY_FRACTION
        duplicate = rng.random() < DUPLICATE_FRACTION
        refund = None
        if rng.random() < REFUND_FRACTION:
            refund = 0 if rng.random() < 0.5 else rng.randint(1, amount)
        body: dict[str, Any] = {"amount": amount, "currency": "USD", "payment_method": method}
        body["metadata"] = {"chaos_key": f"pay-{index}"}
        if rng.random() >= MANUAL_FRACTION:
            return Plan(merchant, body, drop_first, duplicate, refund)
        body["capture_method"] = "manual"
        manual = rng.choices(MANUAL_ENDINGS, MANUAL_WEIGHTS)[0]
        capture = rng.randint(1, amount) if manual == "partial" else None
        return Plan(merchant, body, drop_first, duplicate, None, manual, capture)

    def _payout_plan(self) -> PayoutPlan:
        rng = self._payout_rng
        merchant = rng.choice(self.merchants)
        kind = rng.choices(PAYOUT_KINDS, PAYOUT_WEIGHTS)[0]
        part = rng.uniform(*PAYOUT_PART)
        failing = rng.choice(sorted(FAILING_DESTINATIONS))
        drop_first = rng.random() < RETRY_FRACTION
        duplicate = rng.random() < DUPLICATE_FRACTION
        destination = failing if kind == "failing" else None
        return PayoutPlan(merchant, kind, part, destination, drop_first, duplicate)

    async def _run(self) -> None:
        try:
            plans = [self._plan(i) for i in range(self.count)]
            payouts = [self._payout_plan() for _ in range(round(self.count * PAYOUT_FRACTION))]
            paying = asyncio.create_task(self._paced(payouts, self._pay_out))
            await self._paced(plans, self._pay)
            await paying
        finally:
            self.done.set()

    async def _paced(self, plans: list[P], act: Callable[[P], Coroutine[Any, Any, None]]) -> None:
        """``act`` on each plan, evenly spread over the run, all of them to their end."""
        started = time.monotonic()
        gap = self.duration_s / max(len(plans), 1)
        tasks: list[asyncio.Task[None]] = []
        for index, plan in enumerate(plans):
            await asyncio.sleep(max(0.0, started + index * gap - time.monotonic()))
            tasks.append(asyncio.create_task(act(plan)))
        await asyncio.gather(*tasks)

    async def _pay(self, plan: Plan) -> None:
        if plan.refund is not None:
            to_come = plan.refund or int(plan.body["amount"])
            self._refunds_to_come[plan.merchant.id] += to_come
        sent = await self.pay(plan.merchant, plan.body, drop_first=plan.drop_first)
        if sent.accepted and plan.duplicate:
            await self._resend_payment(plan.merchant, sent)
        if sent.accepted and plan.refund is not None:
            await self._refund(plan.merchant, next(iter(sent.ids)), plan.refund)
        if sent.accepted and plan.manual is not None:
            await self._end_authorization(plan, next(iter(sent.ids)))

    async def pay(
        self, merchant: Merchant, body: dict[str, Any], *, drop_first: bool = False
    ) -> Sent:
        key = str(body["metadata"]["chaos_key"])
        sent = Sent(key, merchant.id, body)
        self.payments.append(sent)
        if drop_first:
            sent.resends += 1
            await _ignoring_errors(self._impatient[merchant.id].create_payment(body, key))
        await self._until_answered(
            sent, lambda: self._clients[merchant.id].create_payment(body, key)
        )
        return sent

    async def probe(self) -> Sent:
        """A card that works, from the first merchant: the scenario's measure of recovery."""
        self._probes += 1
        body = {"amount": 4242, "currency": "USD", "payment_method": "pm_card_visa"}
        body["metadata"] = {"chaos_key": f"probe-{self._probes}"}
        sent = await self.pay(self.merchants[0], body)
        sent.probe = True
        return sent

    async def _resend_payment(self, merchant: Merchant, sent: Sent) -> None:
        client = self._clients[merchant.id]
        await self._until_answered(sent, lambda: client.create_payment(sent.body, sent.key))

    async def _refund(self, merchant: Merchant, payment_id: str, amount: int) -> None:
        status = await self.wait_terminal(merchant, payment_id)
        if status != "succeeded":
            return
        body = {} if amount == 0 else {"amount": amount}
        key = f"refund-{payment_id}"
        sent = Sent(key, merchant.id, body | {"payment_id": payment_id})
        self.refunds.append(sent)
        client = self._clients[merchant.id]
        await self._until_answered(sent, lambda: client.refund(payment_id, body, key))

    async def _end_authorization(self, plan: Plan, payment_id: str) -> None:
        """Capture or cancel the authorized payment, as planned; or leave it to expire."""
        held = await self.wait_status(plan.merchant, payment_id, AUTHORIZED)
        if held != "requires_capture" or plan.manual == "expire":
            return
        client = self._clients[plan.merchant.id]
        if plan.manual == "cancel":
            body: dict[str, Any] = {"cancellation_reason": "requested_by_customer"}
            send = client.cancel
        else:
            body = {} if plan.capture is None else {"amount_to_capture": plan.capture}
            send = client.capture
        sent = Sent(f"{plan.manual}-{payment_id}", plan.merchant.id, body | {"id": payment_id})
        self.actions.append(sent)
        await self._until_answered(sent, lambda: send(payment_id, body, sent.key))

    async def _pay_out(self, plan: PayoutPlan) -> None:
        """A payout as planned: of a part of what the balance shows may be paid out (skipped
        when nothing may), or of more than the merchant could ever hold."""
        client = self._clients[plan.merchant.id]
        if plan.kind == "overdraft":
            amount, sent_to = OVERDRAFT, self.overdrafts
        else:
            spare = await self._available(client) - self._refunds_to_come[plan.merchant.id]
            amount, sent_to = int(spare * plan.part), self.payouts
            if amount < 1:
                self.payouts_skipped += 1
                return
        body: dict[str, Any] = {"amount": amount, "currency": "USD"}
        if plan.destination is not None:
            body["destination"] = plan.destination
        sent = Sent(f"payout-{len(self.payouts) + len(self.overdrafts)}", plan.merchant.id, body)
        sent_to.append(sent)
        if plan.drop_first:
            sent.resends += 1
            await _ignoring_errors(self._impatient[plan.merchant.id].create_payout(body, sent.key))
        await self._until_answered(sent, lambda: client.create_payout(body, sent.key))
        if sent.accepted and plan.duplicate:
            await self._until_answered(sent, lambda: client.create_payout(body, sent.key))

    async def _available(self, client: ApiClient) -> int:
        """What the merchant's balance shows available, read as a client would: again after
        no answer or a 5xx (0 if none came within GIVE_UP_S)."""
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline:
            reply = await _ignoring_errors(client.balance())
            if reply is not None and reply.status == 200:
                amounts = reply.body["available"]
                return sum(int(b["amount"]) for b in amounts if b["currency"] == "USD")
            await asyncio.sleep(0.25)
        return 0

    async def wait_terminal(
        self, merchant: Merchant, payment_id: str, timeout_s: float = GIVE_UP_S
    ) -> str | None:
        """The payment's status once the API reports it terminal; None if it never does."""
        return await self.wait_status(merchant, payment_id, TERMINAL, timeout_s)

    async def wait_status(
        self,
        merchant: Merchant,
        payment_id: str,
        statuses: Collection[str],
        timeout_s: float = GIVE_UP_S,
    ) -> str | None:
        """The payment's status once the API reports one of ``statuses``; None if it never does."""
        deadline = time.monotonic() + timeout_s
        client = self._clients[merchant.id]
        while time.monotonic() < deadline:
            reply = await _ignoring_errors(client.get_payment(payment_id))
            if reply is not None and reply.body.get("status") in statuses:
                return str(reply.body["status"])
            await asyncio.sleep(0.25)
        return None

    async def _until_answered(self, sent: Sent, send: Callable[[], Awaitable[Reply]]) -> None:
        """Send until a definite answer: a 2xx, or a 4xx that is not 'in flight, retry'."""
        deadline = time.monotonic() + GIVE_UP_S
        backoff = 0.1
        while time.monotonic() < deadline:
            reply = await _ignoring_errors(send())
            if reply is not None and not _retry(reply):
                if reply.status < 300:
                    sent.outcome = "accepted"
                    sent.ids.add(str(reply.body["id"]))
                else:
                    sent.outcome = f"rejected:{reply.status}:{reply.error_code}"
                return
            sent.resends += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def _retry(reply: Reply) -> bool:
    return reply.status >= 500 or reply.error_code == "idempotency_key_in_use"


async def _ignoring_errors(request: Awaitable[Reply]) -> Reply | None:
    try:
        return await request
    except httpx.HTTPError:
        return None
