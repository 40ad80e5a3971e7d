"""Manual capture and payouts at the simulator: ``/v1/authorizations``, their captures and
voids, and ``/v1/payouts``.

``SimGateway`` is ``HttpGateway`` with the operations manual capture needs
(``workers.processor.operations.CaptureGateway``), in the shapes the Stripe connector answers
with: an authorization is ``Authorized`` (its id is what captures and voids name), a capture
``Captured`` with the charge it made and the amount taken, a void ``Canceled``. Each call
carries the key derived from the payment id and the operation; no answer is ``Unknown``.
"""

from __future__ import annotations

from typing import Any

import httpx

from workers.processor.gateway import (
    Charged,
    ChargeRequest,
    Declined,
    GatewayUnreachable,
    HttpGateway,
    Rejected,
    card_body,
)
from workers.processor.operations import (
    Authorized,
    AuthorizeOutcome,
    Canceled,
    CancelOutcome,
    Captured,
    CaptureOutcome,
    FoundPayout,
    GatewayPayment,
    PaymentOutcome,
    PayoutFailed,
    PayoutOutcome,
    PayoutRequest,
    PayoutSent,
    authorize_key,
    payout_key,
)


class SimGateway(HttpGateway):
    async def authorize(self, request: ChargeRequest) -> AuthorizeOutcome:
        body = card_body(request)
        reply = await self.posted("/v1/authorizations", body, authorize_key(request.payment_id))
        if not isinstance(reply, httpx.Response):
            return reply
        if reply.status_code != 200:
            return _rejected(reply)
        return _outcome(reply.json())

    async def capture(self, charge_id: str, amount: int | None, key: str) -> CaptureOutcome:
        body: dict[str, Any] = {} if amount is None else {"amount_to_capture": amount}
        reply = await self.posted(f"/v1/authorizations/{charge_id}/capture", body, key)
        if not isinstance(reply, httpx.Response):
            return reply
        if reply.status_code != 200:
            return _rejected(reply)
        found = reply.json()
        return Captured(str(found["charge"]), int(found["amount_captured"]))

    async def cancel(self, charge_id: str, key: str) -> CancelOutcome:
        reply = await self.posted(f"/v1/authorizations/{charge_id}/void", {}, key)
        if not isinstance(reply, httpx.Response):
            return reply
        if reply.status_code != 200:
            return _rejected(reply)
        return Canceled(str(reply.json()["id"]))

    async def payout(self, request: PayoutRequest) -> PayoutOutcome:
        body: dict[str, Any] = {"amount": request.amount, "currency": request.currency,
                                "reference": request.payout_id}  # fmt: skip
        if request.destination is not None:
            body["destination"] = request.destination
        reply = await self.posted("/v1/payouts", body, payout_key(request.payout_id))
        if not isinstance(reply, httpx.Response):
            return reply
        if reply.status_code != 200:
            return _rejected(reply)
        return _payout(reply.json())

    async def find_payout(self, payout_id: str, gateway_payout_id: str) -> FoundPayout:
        """The simulator's payout, by FlowPay's payout id (its reference there)."""
        found = await self._list("/v1/payouts", payout_id)  # GatewayUnreachable
        for payout in found:
            if payout["id"] == gateway_payout_id:
                return _payout(payout)
        raise GatewayUnreachable(f"the simulator has no payout {gateway_payout_id}")

    async def look_up(self, payment_id: str, charge_id: str | None = None) -> list[GatewayPayment]:
        """The authorizations made for ``payment_id`` (by its reference)."""
        found = await self._list("/v1/authorizations", payment_id)  # GatewayUnreachable
        return [
            GatewayPayment(
                str(a["id"]), _outcome(a), int(a["amount"]), int(a["amount_captured"] or 0)
            )
            for a in found
        ]


def _outcome(authorization: dict[str, Any]) -> PaymentOutcome:
    """An authorization's state as the payment outcome it stands for."""
    status = authorization.get("status")
    if status == "requires_capture":
        return Authorized(str(authorization["id"]), int(authorization["amount_capturable"]))
    if status == "captured":
        return Charged(str(authorization["charge"]))
    if status == "canceled":
        return Canceled(str(authorization["id"]))
    return Declined(str(authorization.get("decline_code") or "card_declined"))


def _payout(found: dict[str, Any]) -> FoundPayout:
    if found["status"] == "failed":
        return PayoutFailed(str(found["id"]), str(found["failure_code"]))
    return PayoutSent(str(found["id"]), str(found["status"]))


def _rejected(reply: httpx.Response) -> Rejected:
    return Rejected(f"HTTP {reply.status_code}: {reply.text[:200]}")
