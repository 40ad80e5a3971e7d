"""Payouts: the processor executes the payout saga's ``payout.send`` commands.

Each payout is sent through the gateway once, with the idempotency key derived from the payout
id, and its outcome recorded in ``processor.payouts`` with the command and the answering event
(``payout.paid`` or ``payout.failed``) in one transaction (``ProcessorStore.payout_settled``).
A redelivered command is found recorded and calls nothing; a resend of a payout already settled
calls nothing either (its answer is already staged). No answer from the gateway is a
``TransientError``: the engine takes the command again after a backoff, with the same key, so
the gateway answers with the payout it made, if it made one; a payout is never taken for failed
without the gateway's word.
"""

from __future__ import annotations

import logging

from workers.core.commands import Command, Payout
from workers.core.errors import PermanentError, TransientError
from workers.processor.gateway import Rejected
from workers.processor.operations import (
    OperationsGateway,
    PayoutFailed,
    PayoutRequest,
    PayoutSent,
)
from workers.processor.store import PayoutOutcomeRow, ProcessorStore

log = logging.getLogger(__name__)


class Payouts:
    def __init__(self, store: ProcessorStore, gateway: OperationsGateway) -> None:
        self.store = store
        self.gateway = gateway

    async def execute(self, command: Command) -> None:
        """One ``payout.send`` not executed before (``Captures`` dedupes and routes it)."""
        if await self.store.payout_known(command.subject):
            await self.store.payout_settled(command, None)
            return
        await self.store.payout_settled(command, await self._send(command))

    async def _send(self, command: Command) -> PayoutOutcomeRow:
        data = command.data
        if not isinstance(data, Payout):
            raise PermanentError(f"{command.type} is not a payout")
        request = PayoutRequest(command.subject, command.merchant_id, data.amount, data.currency,
                                destination=data.destination)  # fmt: skip
        match await self.gateway.payout(request):
            case PayoutSent(gateway_id, "paid"):
                return PayoutOutcomeRow("paid", gateway_id, None)
            case PayoutFailed(gateway_id, code):
                return PayoutOutcomeRow("failed", gateway_id, code)
            case Rejected(detail):
                log.error("gateway refused payout %s: %s", command.subject, detail)
                return PayoutOutcomeRow("failed", None, "gateway_rejected")
            case PayoutSent(gateway_id, status):
                # Stripe's payouts are paid days later; its payout.paid webhook is to settle them.
                raise TransientError(f"payout {command.subject} is {status} at {gateway_id}")
            case unknown:
                raise TransientError(f"payout {command.subject}: no answer ({unknown})")
