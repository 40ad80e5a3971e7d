"""The gateway's own reports (``gateway.reported``: Stripe's verified webhooks, through the API):
the processor settles by them.

``payment_intent.succeeded`` and ``payment_intent.payment_failed`` settle a payment still
waiting on the gateway (``processing``: pending or unknown; ``requires_action``);
``payment_intent.amount_capturable_updated`` moves a manual payment whose customer
authenticated on to ``requires_capture`` (an automatic one is never held: contradicted). A
report is applied once: a duplicate, or a late one that says what the payment already is, changes
nothing; one contradicting a settled payment (succeeded at Stripe for a payment FlowPay failed,
another charge, ...) is logged and counted, never applied: the reconciler's late-charge watch,
not a webhook, decides what to do with money taken after a failure. ``charge.refunded`` has the
reconciler look again, at once, at the payment's refunds whose outcome is unknown.
``payout.paid`` and ``payout.failed`` land a payout in transit (``workers.processor.payouts``).
"""

from __future__ import annotations

import logging
from typing import Final, get_args

from workers.core.events import Event, FailureReason, GatewayReported
from workers.processor import metrics, payouts
from workers.processor.charging import Charging, failed, succeeded
from workers.processor.settlements import Attempt, Settle
from workers.processor.states import State
from workers.processor.store import Payment
from workers.processor.waits import authorized, held

log = logging.getLogger(__name__)

# Where a report may still settle the payment.
WAITING: Final = frozenset({State.PROCESSING, State.REQUIRES_ACTION})
SETTLES: Final = {
    "payment_intent.succeeded": State.SUCCEEDED,
    "payment_intent.payment_failed": State.FAILED,
    # A manual payment's authorization, completed by its customer (3-D Secure).
    "payment_intent.amount_capturable_updated": State.REQUIRES_CAPTURE,
}
# Each settled state and the later ones a report of it agrees with.
AGREES: Final = {
    State.SUCCEEDED: frozenset({State.SUCCEEDED, State.REFUNDED}),
    State.FAILED: frozenset({State.FAILED}),
    State.REQUIRES_CAPTURE: frozenset(
        {State.REQUIRES_CAPTURE, State.SUCCEEDED, State.REFUNDED, State.CANCELED}
    ),
}


class Reports:
    def __init__(self, charging: Charging) -> None:
        self.charging = charging
        self.store = charging.store

    async def on_reported(self, event: Event) -> None:
        report = event.payload(GatewayReported)
        kind = report.gateway_event_type
        if kind.startswith("payout."):
            _counted(report, await payouts.on_reported(self.store, event.payment_id, report))
            return
        payment = await self.store.get(event.payment_id)
        if payment is None:
            _counted(report, "unknown_payment")
            return
        if kind == "charge.refunded":
            nudged = await self.store.recheck_refunds_now(payment.payment_id)
            _counted(report, "refunds_rechecked" if nudged else "nothing_to_recheck")
            return
        await self._settle(payment, report, SETTLES[kind])

    async def _settle(self, payment: Payment, report: GatewayReported, to: State) -> None:
        state = State(payment.state)
        if state in WAITING and (to != State.REQUIRES_CAPTURE or held(payment)):
            attempt = Attempt("report", to.value, report.gateway_event_id, 0)
            moved = await self.charging.settle(payment, [attempt], verdict(payment, report, to))
            _counted(report, "applied" if moved else "stale")
        elif state in AGREES[to] and payment.charge_id in (None, report.object_id):
            _counted(report, "duplicate")
        else:
            log.warning(
                "gateway report %s (%s of %s) contradicts payment %s, which is %s: not applied",
                report.gateway_event_id,
                report.gateway_event_type,
                report.object_id,
                payment.payment_id,
                state.value,
            )
            _counted(report, "contradicted")


def verdict(payment: Payment, report: GatewayReported, to: State) -> Settle:
    """The settlement a report of ``to`` makes of a payment still waiting on the gateway."""
    if to == State.SUCCEEDED:
        return succeeded(payment, report.object_id)
    if to == State.REQUIRES_CAPTURE:
        return authorized(payment, report.object_id)
    return failed(payment, reason_of(report.failure_reason))


def reason_of(reported: str | None) -> FailureReason:
    """A reported failure as FlowPay's reason (the webhook intake maps Stripe's codes; anything
    else is a decline of the card)."""
    for reason in get_args(FailureReason):
        if reason == reported:
            return reason  # type: ignore[no-any-return]
    return "card_declined"


def _counted(report: GatewayReported, outcome: str) -> None:
    metrics.REPORTS.labels(report.gateway_event_type, outcome).inc()
    log.info(
        "gateway report %s (%s): %s",
        report.gateway_event_id,
        report.gateway_event_type,
        outcome,
    )
