"""The payment gateway, behind one small interface; ``HttpGateway`` speaks a Stripe-style API.

A real provider's adapter is one more class with these three methods. Every call carries an
idempotency key derived from the payment (or refund) id, so repeating a call never charges twice.
Timeouts, dropped connections, 5xx, 429 and 409 (the key's first request still in progress) are
retried with jittered exponential backoff; when the retries run out the outcome is *unknown*,
never "failed": the caller looks the charge up.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import httpx

from workers.core.config import GatewaySettings, Settings
from workers.core.events import NextAction as ActionShown
from workers.core.events import RedirectToUrl
from workers.core.ids import derived_key
from workers.core.outbound_http import AnswerRefused, Outbound, PooledTransport
from workers.core.retry import retried
from workers.processor import metrics

CaptureMethod = Literal["automatic", "manual"]


@dataclass(frozen=True)
class ChargeRequest:
    payment_id: str
    amount: int
    currency: str
    payment_method: str
    # manual: authorize only (``workers.processor.operations``: capture or cancel later).
    capture_method: CaptureMethod = "automatic"
    # Where a customer sent to authenticate (3-D Secure) comes back to, when the payment has one.
    return_url: str | None = None


@dataclass(frozen=True)
class Charged:
    charge_id: str


@dataclass(frozen=True)
class Declined:
    code: str  # the failure reason: events.FailureReason
    decline_code: str | None = None  # the issuer's own, where the gateway tells it


@dataclass(frozen=True)
class NextAction:
    """What the customer must do before the payment can go on, as merchants are shown it.

    ``type`` is the gateway's (``redirect_to_url``, ``use_stripe_sdk``, ...); ``redirect_url``
    is where to send the customer when it is a redirect. No secret is ever kept here.
    """

    type: str
    redirect_url: str | None = None

    def shown(self) -> ActionShown:
        """As merchants see it, in Stripe's shape (an event's ``next_action``)."""
        redirect = None if self.redirect_url is None else RedirectToUrl(url=self.redirect_url)
        return ActionShown(type=self.type, redirect_to_url=redirect)


@dataclass(frozen=True)
class AwaitingCustomer:
    """The customer must act (3-D Secure): the payment waits for them (``requires_action``)."""

    charge_id: str
    next_action: NextAction


@dataclass(frozen=True)
class Pending:
    """The gateway holds the payment but its outcome comes later (Stripe: ``processing``, or a
    PaymentIntent that was never confirmed); a look-up or a webhook settles it."""

    charge_id: str
    status: str


@dataclass(frozen=True)
class Rejected:
    """The gateway refused the request itself (4xx): retrying the same request cannot help."""

    detail: str


@dataclass(frozen=True)
class Unknown:
    """No answer after every retry: the gateway may or may not have acted."""

    reason: str  # timeout | connection | http_<status>: 5xx, 429, 409


@dataclass(frozen=True)
class RefundDone:
    refund_id: str


@dataclass(frozen=True)
class GatewayCharge:
    id: str
    status: str  # succeeded | declined
    amount: int
    decline_code: str | None


@dataclass(frozen=True)
class GatewayRefund:
    id: str
    status: str  # succeeded
    amount: int


# A charge answered: settled (charged, declined), refused, waiting (for the customer, or for a
# payment method that settles later), or unknown.
ChargeOutcome = Charged | Declined | AwaitingCustomer | Pending | Rejected | Unknown
RefundOutcome = RefundDone | Rejected | Unknown


class GatewayUnreachable(Exception):
    """A lookup got no answer."""


class Gateway(Protocol):
    async def charge(self, request: ChargeRequest) -> ChargeOutcome: ...

    async def refund(
        self, charge_id: str, amount: int, key: str, reference: str | None = None
    ) -> RefundOutcome: ...

    async def find_charges(self, reference: str) -> list[GatewayCharge]: ...

    async def find_refunds(
        self, reference: str, charge_id: str | None = None
    ) -> list[GatewayRefund]: ...

    async def close(self) -> None: ...


def charge_key(payment_id: str) -> str:
    return derived_key("charge", payment_id)


def refund_key(refund_id: str) -> str:
    return derived_key("refund", refund_id)


def gateway_url(settings: Settings) -> str:
    return settings.gateway.url or f"http://{settings.gateway_sim.host}:{settings.gateway_sim.port}"


class _Retryable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# 409: a request with the same idempotency key is still in progress (it may yet charge);
# 429: rate limited. Neither says what became of the request: retry, then the outcome is unknown.
RETRYABLE_4XX: Final = frozenset({409, 429})


class HttpGateway:
    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config: GatewaySettings = settings.gateway
        headers = {}
        if self.config.api_key is not None:
            headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        self._http = Outbound(
            transport or PooledTransport(self.config.max_connections),
            self.config.timeout_s,
            headers,
        )
        base = httpx.URL(gateway_url(settings))
        self._base = (
            base if base.raw_path.endswith(b"/") else base.copy_with(raw_path=base.raw_path + b"/")
        )
        self._url = functools.lru_cache(maxsize=64)(self._absolute)

    def _absolute(self, path: str) -> httpx.URL:
        """``path`` under the gateway's address, parsed once (parsing a URL is a good part of a
        request's own CPU)."""
        return self._base.copy_with(raw_path=self._base.raw_path + path.lstrip("/").encode())

    async def close(self) -> None:
        await self._http.aclose()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        body = card_body(request)
        try:
            reply = await self._retrying(
                lambda: self._post("/v1/charges", body, charge_key(request.payment_id))
            )
        except _Retryable as exc:
            return Unknown(exc.reason)
        if reply.status_code != 200:
            return Rejected(f"HTTP {reply.status_code}: {reply.text[:200]}")
        charge = reply.json()
        if charge.get("status") == "succeeded":
            return Charged(str(charge["id"]))
        return Declined(str(charge.get("decline_code") or "card_declined"))

    async def refund(
        self, charge_id: str, amount: int, key: str, reference: str | None = None
    ) -> RefundOutcome:
        """Refund ``amount`` of a charge; ``reference`` (FlowPay's refund id) finds it later."""
        body: dict[str, Any] = {"charge": charge_id, "amount": amount}
        if reference is not None:
            body["reference"] = reference
        try:
            reply = await self._retrying(lambda: self._post("/v1/refunds", body, key))
        except _Retryable as exc:
            return Unknown(exc.reason)
        if reply.status_code != 200:
            return Rejected(f"HTTP {reply.status_code}: {reply.text[:200]}")
        return RefundDone(str(reply.json()["id"]))

    async def find_charges(self, reference: str) -> list[GatewayCharge]:
        return [
            GatewayCharge(str(c["id"]), str(c["status"]), int(c["amount"]), c.get("decline_code"))
            for c in await self._list("/v1/charges", reference)
        ]

    async def find_refunds(
        self, reference: str, charge_id: str | None = None
    ) -> list[GatewayRefund]:
        """The refunds made with ``reference``; ``charge_id`` is for gateways that need it."""
        return [
            GatewayRefund(str(r["id"]), str(r["status"]), int(r["amount"]))
            for r in await self._list("/v1/refunds", reference)
        ]

    async def posted(self, path: str, body: dict[str, Any], key: str) -> httpx.Response | Unknown:
        """POST ``body`` with the idempotency key, retried; Unknown once the retries run out."""
        try:
            return await self._retrying(lambda: self._post(path, body, key))
        except _Retryable as exc:
            return Unknown(exc.reason)

    async def _list(self, path: str, reference: str) -> list[dict[str, Any]]:
        """The objects at ``path`` made with ``reference``; GatewayUnreachable without an answer."""
        try:
            reply = await self._retrying(lambda: self._get(path, {"reference": reference}))
        except _Retryable as exc:
            raise GatewayUnreachable(exc.reason) from None
        if reply.status_code != 200:
            raise GatewayUnreachable(f"HTTP {reply.status_code}")
        found: list[dict[str, Any]] = reply.json()["data"]
        return found

    async def _retrying(self, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        """``call`` until it answers, retried with the one backoff shape (``workers.core.retry``);
        _Retryable once the retries run out."""
        return await retried(
            call,
            _Retryable,
            attempts=self.config.max_retries + 1,
            first_s=self.config.backoff_base_s,
            max_s=self.config.backoff_max_s,
        )

    async def _post(self, path: str, body: dict[str, Any], key: str) -> httpx.Response:
        request = self._http.request(
            "POST",
            self._url(path),
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            content=json.dumps(body, separators=(",", ":")).encode(),
        )
        return await self._send(request, path)

    async def _get(self, path: str, params: dict[str, str]) -> httpx.Response:
        return await self._send(
            self._http.request("GET", self._url(path).copy_merge_params(params)), path
        )

    async def _send(self, request: httpx.Request, path: str) -> httpx.Response:
        method = request.method
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:  # no answer to go by: a timeout, a lost connection
            metrics.attempted(method, path, exc)
            raise _Retryable(unanswered(exc)) from None
        metrics.attempted(method, path, None, response.status_code)
        if response.status_code >= 500 or response.status_code in RETRYABLE_4XX:
            raise _Retryable(f"http_{response.status_code}")
        return response


def unanswered(exc: BaseException | None) -> str:
    """Why a call has no answer to go by (``exc``: what outbound HTTP raised), as its outcome's
    reason; every connector's calls go over ``workers.core.outbound_http``."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, AnswerRefused):
        return "answer_refused"  # over its bound, or compressed unasked
    return "connection"


def card_body(request: ChargeRequest) -> dict[str, Any]:
    """What a charge or an authorization asks the simulator for; the payment id is its reference."""
    return {
        "amount": request.amount,
        "currency": request.currency,
        "payment_method": request.payment_method,
        "reference": request.payment_id,
    }


async def timed(call: Awaitable[Any]) -> tuple[Any, int]:
    """The call's result and how long it took, in milliseconds."""
    started = time.perf_counter()
    result = await call
    return result, int((time.perf_counter() - started) * 1000)
