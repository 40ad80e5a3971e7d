"""Charging payments set-based: a batch started in one transaction, its charges made at once,
each settled as its answer comes back (``workers.processor.settlements``).

At most one charge per payment: every call carries the key derived from the payment id, and a
payment is ``processing``, committed, before its first charge is sent; one that is not still
``processing`` and the handler's (the reconciler owns it once it has a check due) is not
charged. An unknown outcome is looked up at once; one the gateway cannot account for goes to
the reconciler. One payment's slow or unknown charge holds none of the others: each settles
as soon as its own answer is in. The functions take payments, not Kafka messages, so that a
command can start them as an event does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from opentelemetry.trace import Span

from workers.core import correlation, tracing
from workers.core.config import ProcessorSettings
from workers.core.events import (
    EventData,
    EventType,
    Failed,
    Processing,
    RedirectToUrl,
    RequiresAction,
    Succeeded,
)
from workers.core.events import NextAction as ActionShown
from workers.processor.gateway import (
    AwaitingCustomer,
    Charged,
    ChargeOutcome,
    ChargeRequest,
    Declined,
    Gateway,
    GatewayCharge,
    GatewayUnreachable,
    Pending,
    Rejected,
    timed,
)
from workers.processor.schedule import recheck_after_s
from workers.processor.settlements import (
    Attempt,
    Defer,
    Settle,
    Settlement,
    Settler,
    attempt_of,
)
from workers.processor.states import Move, State, apply
from workers.processor.store import NewPayment, Payment, ProcessorStore, Staged, event_row

log = logging.getLogger(__name__)

SUCCEEDED = apply(State.PROCESSING, Move.SUCCEED)
FAILED = apply(State.PROCESSING, Move.FAIL)
REQUIRES_ACTION = apply(State.PROCESSING, Move.REQUIRE_ACTION)


@dataclass(frozen=True)
class Job:
    """A payment to start, the span its work is done under (None: tracing is off) and the ids
    its log lines carry (``workers.core.correlation``)."""

    payment: NewPayment
    span: Span | None = None
    fields: Mapping[str, str | None] = field(default_factory=dict)


class Charging:
    def __init__(
        self,
        config: ProcessorSettings,
        store: ProcessorStore,
        gateway: Gateway,
        settler: Settler,
    ) -> None:
        self.config = config
        self.store = store
        self.gateway = gateway
        self.settler = settler
        # Gateway calls in flight at once, over every batch and the reconciler.
        self.slots = asyncio.Semaphore(config.max_in_flight)

    async def start(self, jobs: Sequence[Job]) -> None:
        """Start the payments of ``jobs`` (each once) in one transaction, then charge those
        still to charge, all at once; returns when each is settled or deferred. Ends each
        job's span."""
        try:
            staged = [_staged(job) for job in jobs]
            payments = await self.store.start_many([job.payment for job in jobs], staged)
        except BaseException as exc:
            for job in jobs:
                tracing.end(job.span, exc)
            raise
        await gather_all(self._charge_new(job, payments[job.payment.payment_id]) for job in jobs)

    async def _charge_new(self, job: Job, payment: Payment) -> None:
        error: BaseException | None = None
        try:
            with tracing.within(job.span), correlation.bound(**job.fields):
                # Settled already (a redelivery), or the reconciler's: not this call's to charge.
                if payment.state == State.PROCESSING and payment.next_check_at is None:
                    await self.charge(payment)
        except BaseException as exc:
            error = exc
            raise
        finally:
            tracing.end(job.span, error)

    async def charge(self, payment: Payment) -> None:
        """Charge ``payment`` (same key every time: a charge made before is found, never made
        again) and settle what the gateway says, or defer it to the reconciler."""
        request = ChargeRequest(
            payment.payment_id, payment.amount, payment.currency, payment.payment_method
        )
        async with self.slots:
            outcome, ms = await timed(self.gateway.charge(request))
        attempts = [attempt_of("charge", outcome, ms)]
        verdict: Settle | Defer | None = self._verdict(payment, outcome)
        if verdict is None:  # unknown: look it up now
            charges, looked = await self.look_up(payment)
            attempts.append(looked)
            verdict = self.verdict_from(payment, charges) or Defer(self.delay(payment))
        await self.settle(payment, attempts, verdict)

    async def settle(
        self, payment: Payment, attempts: Iterable[Attempt], verdict: Settle | Defer
    ) -> bool:
        return await self.settler.settle(
            Settlement(payment.payment_id, State(payment.state), tuple(attempts), verdict)
        )

    async def look_up(self, payment: Payment) -> tuple[list[GatewayCharge] | None, Attempt]:
        """The gateway's charges for the payment (None: no answer), and the call's record."""
        try:
            async with self.slots:
                charges, ms = await timed(self.gateway.find_charges(payment.payment_id))
        except GatewayUnreachable as exc:
            return None, Attempt("lookup", "unreachable", str(exc), 0)
        found = ",".join(f"{c.id}:{c.status}" for c in charges) or None
        return list(charges), Attempt("lookup", "found" if charges else "none", found, ms)

    def _verdict(self, payment: Payment, outcome: ChargeOutcome) -> Settle | Defer | None:
        """What a charge's answer settles (or defers); None when it is unknown."""
        match outcome:
            case Charged(charge_id):
                return succeeded(payment, charge_id)
            case Declined(code):
                return failed(payment, code)
            case AwaitingCustomer():
                return self.awaiting(payment, outcome)
            case Pending(charge_id):
                return self.pending(payment, charge_id)
            case Rejected(detail):
                log.error("gateway refused the charge of %s: %s", payment.payment_id, detail)
                return failed(payment, "gateway_error")
        return None

    @staticmethod
    def verdict_from(payment: Payment, charges: list[GatewayCharge] | None) -> Settle | None:
        """What the gateway's record of the payment's charges settles; None if nothing."""
        charged = [c for c in charges or () if c.status == "succeeded"]
        if charged:
            return succeeded(payment, charged[0].id)
        declined = [c for c in charges or () if c.status == "declined"]
        if declined:
            return failed(payment, declined[0].decline_code or "card_declined")
        return None

    def delay(self, payment: Payment) -> float:
        return recheck_after_s(self.config, payment.checks)

    def awaiting(self, payment: Payment, outcome: AwaitingCustomer) -> Settle:
        """processing -> requires_action: shown to the merchant with its next action, and
        looked up on the re-check schedule until the gateway reports or the wait ends."""
        action = outcome.next_action
        redirect = None if action.redirect_url is None else RedirectToUrl(url=action.redirect_url)
        shown = ActionShown(type=action.type, redirect_to_url=redirect)
        row = _event(payment, EventType.REQUIRES_ACTION, RequiresAction(
            charge_id=outcome.charge_id, next_action=shown))  # fmt: skip
        first = min(self.config.recheck_first_s, self.config.requires_action_timeout_s)
        check = datetime.now(UTC) + timedelta(seconds=first)
        return Settle(REQUIRES_ACTION, outcome.charge_id, None, check, row)

    def pending(self, payment: Payment, charge_id: str) -> Defer:
        """The gateway holds the charge and settles it later: looked up (by its id) on the
        re-check schedule ``processor.pending_max_checks`` times, then left to its webhook."""
        if payment.checks >= self.config.pending_max_checks:
            log.warning(
                "payment %s still pending at the gateway after %d checks: left to its webhook",
                payment.payment_id,
                payment.checks,
            )
            return Defer(None, charge_id)
        return Defer(self.delay(payment), charge_id)

    def watched_failure(self, payment: Payment) -> Settle:
        """No charge found by the deadline: failed, and watched for a late charge."""
        watch = datetime.now(UTC) + timedelta(seconds=self.config.recheck_first_s)
        return failed(payment, "gateway_timeout", watch)


def succeeded(payment: Payment, charge_id: str) -> Settle:
    row = _event(payment, EventType.SUCCEEDED, Succeeded(charge_id=charge_id))
    return Settle(SUCCEEDED, charge_id, None, None, row)


def failed(payment: Payment, reason: str, watch_until: datetime | None = None) -> Settle:
    """processing -> failed; ``watch_until`` keeps the reconciler looking for a late charge."""
    row = _event(payment, EventType.FAILED, Failed(reason=reason))
    return Settle(FAILED, None, reason, watch_until, row)


def _event(payment: Payment, kind: EventType, data: EventData) -> tuple[object, ...]:
    return event_row(payment.payment_id, payment.merchant_id, payment.correlation_id, kind, data)


def _staged(job: Job) -> Staged:
    new = job.payment
    with tracing.within(job.span):
        row = event_row(
            new.payment_id, new.merchant_id, new.correlation_id, EventType.PROCESSING, Processing()
        )
        return Staged(tracing.current_traceparent(), row)


async def gather_all(calls: Iterable[Awaitable[None]]) -> None:
    """Run ``calls`` at once until every one has ended; then raise the first error, if any
    (none is left running behind a failure, as plain ``gather`` would)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
