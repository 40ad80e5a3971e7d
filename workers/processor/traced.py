"""A ``Gateway`` whose calls are spans: children of the consumer span of the event in hand."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from opentelemetry.trace import SpanKind

from workers.core import tracing
from workers.processor.gateway import (
    ChargeOutcome,
    ChargeRequest,
    Gateway,
    GatewayCharge,
    RefundOutcome,
)

T = TypeVar("T")


class TracedGateway:
    """Any ``Gateway``, each call (its retries included) one client span, named by operation."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        return await _traced("charge", self.gateway.charge(request))

    async def refund(self, charge_id: str, amount: int, key: str) -> RefundOutcome:
        return await _traced("refund", self.gateway.refund(charge_id, amount, key))

    async def find_charges(self, reference: str) -> list[GatewayCharge]:
        return await _traced("lookup", self.gateway.find_charges(reference))

    async def close(self) -> None:
        await self.gateway.close()


async def _traced(operation: str, call: Awaitable[T]) -> T:
    with tracing.span(f"gateway {operation}", kind=SpanKind.CLIENT) as span:
        result = await call
        if span is not None:
            span.set_attribute("flowpay.gateway.outcome", _outcome(result))
        return result


def _outcome(result: object) -> str:
    if isinstance(result, list):
        return f"{len(result)} found"
    return type(result).__name__.lower()
