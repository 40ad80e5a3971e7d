"""A ``Gateway`` that counts, times (``workers.processor.metrics``) and traces each call."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from opentelemetry.trace import SpanKind

from workers.core import tracing
from workers.processor.gateway import (
    ChargeOutcome,
    ChargeRequest,
    Declined,
    Gateway,
    GatewayCharge,
    GatewayRefund,
    RefundOutcome,
    Rejected,
    Unknown,
)
from workers.processor.metrics import CALL_SECONDS, CALLS, IN_FLIGHT
from workers.processor.operations import (
    AuthorizeOutcome,
    CancelOutcome,
    CaptureOutcome,
    FoundPayout,
    GatewayPayment,
    OperationsGateway,
    PayoutOutcome,
    PayoutRequest,
)

T = TypeVar("T")


class MeteredGateway:
    """Any ``Gateway``, with each call counted and timed."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        return await _metered("charge", self.gateway.charge(request))

    async def refund(
        self, charge_id: str, amount: int, key: str, reference: str | None = None
    ) -> RefundOutcome:
        return await _metered("refund", self.gateway.refund(charge_id, amount, key, reference))

    async def find_charges(self, reference: str) -> list[GatewayCharge]:
        return await _metered("lookup", self.gateway.find_charges(reference))

    async def find_refunds(
        self, reference: str, charge_id: str | None = None
    ) -> list[GatewayRefund]:
        return await _metered("refund_lookup", self.gateway.find_refunds(reference, charge_id))

    async def close(self) -> None:
        await self.gateway.close()


class MeteredCaptureGateway(MeteredGateway):
    """An ``OperationsGateway``, with its manual-capture and payout calls counted and timed
    too."""

    def __init__(self, gateway: OperationsGateway) -> None:
        super().__init__(gateway)
        self.operations = gateway

    async def authorize(self, request: ChargeRequest) -> AuthorizeOutcome:
        return await _metered("authorize", self.operations.authorize(request))

    async def capture(self, charge_id: str, amount: int | None, key: str) -> CaptureOutcome:
        return await _metered("capture", self.operations.capture(charge_id, amount, key))

    async def cancel(self, charge_id: str, key: str) -> CancelOutcome:
        return await _metered("void", self.operations.cancel(charge_id, key))

    async def payout(self, request: PayoutRequest) -> PayoutOutcome:
        return await _metered("payout", self.operations.payout(request))

    async def find_payout(self, payout_id: str, gateway_payout_id: str) -> FoundPayout:
        return await _metered(
            "payout_lookup", self.operations.find_payout(payout_id, gateway_payout_id)
        )

    async def look_up(self, payment_id: str, charge_id: str | None = None) -> list[GatewayPayment]:
        return await _metered(
            "authorization_lookup", self.operations.look_up(payment_id, charge_id)
        )


async def _metered(operation: str, call: Awaitable[T]) -> T:
    outcome = "unknown"  # also what an exception (an unreachable gateway) counts as
    started = time.perf_counter()
    IN_FLIGHT.labels(operation).inc()
    # The call is a span too: a child of the consumer's span of the event in hand.
    with tracing.span(f"gateway {operation}", kind=SpanKind.CLIENT) as span:
        try:
            result = await call
            outcome = _outcome(result)
            return result
        finally:
            IN_FLIGHT.labels(operation).dec()
            CALL_SECONDS.labels(operation).observe(time.perf_counter() - started)
            CALLS.labels(operation, outcome).inc()
            if span is not None:
                span.set_attribute("flowpay.gateway.outcome", outcome)


def _outcome(result: object) -> str:
    if isinstance(result, Declined):
        return "decline"
    if isinstance(result, Rejected):
        return "rejected"
    if isinstance(result, Unknown):
        return "unknown"
    return "success"
