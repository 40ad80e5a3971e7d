"""The Stripe connector: FlowPay's gateway operations on Stripe's official SDK.

It uses the SDK's async client (``StripeClient``) over FlowPay's outbound HTTP (``StripeHTTP``),
so calls run on the processor's event loop like the simulator's: hundreds in flight cost no
threads, and answers are bounded as the simulator's are.
The SDK's own retries are off; one policy, FlowPay's, retries with tenacity
(``workers.core.retry``): 429, ``Stripe-Should-Retry: true``, 409, 5xx, timeouts and lost
connections, each attempt under one deadline (``gateway.stripe.timeout_s``), each with the
same ``Idempotency-Key`` derived from FlowPay's id (so Stripe acts once however often it is
asked). ``stripe_outcomes`` turns every answer and error into an outcome; an unknown one is
never a decline.

A payment is a PaymentIntent, created and confirmed in one call, carrying FlowPay's payment id
in its metadata (Stripe copies it onto the charge); its id is the ``charge_id`` FlowPay keeps.
A look-up finds it by that id when known, else by the metadata through Stripe's search API
(eventually consistent: a miss soon after a call is not proof, and the reconciler asks again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import httpx
import stripe
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from workers.core.config import GatewaySettings
from workers.core.retry import jittered
from workers.core.stripe_terms import (
    ID,
    MERCHANT_REFERENCE,
    PAYMENT_REFERENCE,
    PAYOUT_REFERENCE,
    REFUND_REFERENCE,
    reference_of,
)
from workers.processor import metrics
from workers.processor.connectors import stripe_outcomes as outcomes
from workers.processor.connectors.stripe_http import StripeHTTP
from workers.processor.gateway import (
    Charged,
    ChargeOutcome,
    ChargeRequest,
    Declined,
    GatewayCharge,
    GatewayRefund,
    GatewayUnreachable,
    RefundOutcome,
    Rejected,
    Unknown,
    charge_key,
)
from workers.processor.operations import (
    Authorized,
    AuthorizeOutcome,
    AwaitingCustomer,
    Canceled,
    CancelOutcome,
    CaptureOutcome,
    FoundPayout,
    GatewayPayment,
    PayoutOutcome,
    PayoutRequest,
    Pending,
    payout_key,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# Stripe's search answers at most this many; FlowPay makes one PaymentIntent per payment.
_SEARCH_LIMIT: Final = 10
# A payment's refunds are listed in one page (Stripe's largest): a payment has few refunds.
_REFUND_PAGE: Final = 100

# The SDK's debug lines carry whole request and response bodies (a PaymentIntent's client
# secret among them): FlowPay's DEBUG level must not print them.
logging.getLogger("stripe").setLevel(logging.WARNING)


class StripeGateway:
    """``Gateway`` and ``OperationsGateway`` on Stripe's PaymentIntents, Refunds and Payouts."""

    def __init__(self, config: GatewaySettings) -> None:
        stripe_config = config.stripe
        if stripe_config.api_key is None:
            raise ValueError("the Stripe connector needs gateway.stripe.api_key")
        self._deadline_s = stripe_config.timeout_s
        self._return_url = stripe_config.return_url
        self._attempts = config.max_retries + 1
        self._wait = jittered(config.backoff_base_s, config.backoff_max_s)
        self._http = StripeHTTP(stripe_config.timeout_s, config.max_connections)
        self._client = stripe.StripeClient(
            stripe_config.api_key.get_secret_value(),
            base_addresses={"api": stripe_config.base_url},
            http_client=self._http,
            max_network_retries=0,
        )

    def __repr__(self) -> str:
        return "StripeGateway()"  # never the key

    async def close(self) -> None:
        await self._http.close_async()

    # --- payments ------------------------------------------------------------------------

    async def authorize(self, request: ChargeRequest) -> AuthorizeOutcome:
        params: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "payment_method": request.payment_method,
            "payment_method_types": ["card"],
            "confirm": True,
            "capture_method": request.capture_method,
            "metadata": {PAYMENT_REFERENCE: request.payment_id},
        }
        # Stripe refuses to confirm a payment that needs a redirect (3-D Secure) without one.
        return_url = request.return_url or self._return_url
        if return_url is not None:
            params["return_url"] = return_url
        options = self._options(charge_key(request.payment_id))
        return await self._call(
            "POST /v1/payment_intents",
            lambda: self._client.v1.payment_intents.create_async(params, options),  # type: ignore[arg-type]
            outcomes.payment_outcome,
        )

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """``authorize`` as an automatic charge: waiting for the customer (3-D Secure) and
        processing (a payment method that settles later) are answered as such; a hold or a
        cancel, which an automatic charge should not meet, is unknown (looked up later)."""
        outcome = await self.authorize(request)
        match outcome:
            case Charged() | Declined() | AwaitingCustomer() | Pending() | Rejected() | Unknown():
                return outcome
            case Authorized():
                return Unknown("requires_capture")
            case Canceled():
                return Unknown("canceled")

    async def capture(self, charge_id: str, amount: int | None, key: str) -> CaptureOutcome:
        params: dict[str, Any] = {} if amount is None else {"amount_to_capture": amount}
        return await self._operate(
            "POST /v1/payment_intents/{id}/capture",
            lambda: self._client.v1.payment_intents.capture_async(
                _checked(charge_id),
                params,  # type: ignore[arg-type]
                self._options(key),
            ),
            outcomes.captured,
        )

    async def cancel(self, charge_id: str, key: str) -> CancelOutcome:
        return await self._operate(
            "POST /v1/payment_intents/{id}/cancel",
            lambda: self._client.v1.payment_intents.cancel_async(
                _checked(charge_id), {}, self._options(key)
            ),
            outcomes.canceled,
        )

    async def look_up(self, payment_id: str, charge_id: str | None = None) -> list[GatewayPayment]:
        if charge_id is not None:
            return await self._retrieve(charge_id)
        query = f"metadata['{PAYMENT_REFERENCE}']:'{_checked(payment_id)}'"
        found = await self._find(
            "GET /v1/payment_intents/search",
            lambda: self._client.v1.payment_intents.search_async(
                {"query": query, "limit": _SEARCH_LIMIT}
            ),
        )
        return [outcomes.found_payment(intent) for intent in found]

    async def find_charges(self, reference: str) -> list[GatewayCharge]:
        return [_as_charge(payment) for payment in await self.look_up(reference)]

    async def _retrieve(self, charge_id: str) -> list[GatewayPayment]:
        found = await self._fetch(
            "GET /v1/payment_intents/{id}",
            lambda: self._client.v1.payment_intents.retrieve_async(_checked(charge_id)),
            outcomes.found_payment,
        )
        return [] if found is None else [found]

    # --- refunds -------------------------------------------------------------------------

    async def refund(
        self, charge_id: str, amount: int, key: str, reference: str | None = None
    ) -> RefundOutcome:
        """Refund ``amount`` of a PaymentIntent. With ``reference`` (FlowPay's refund id) a
        refund already made for it is answered instead of making another: Stripe forgets
        idempotency keys after a day, and a refund re-sent after that must not refund twice."""
        params: dict[str, Any] = {"payment_intent": _checked(charge_id), "amount": amount}
        if reference is not None:
            try:
                made = await self._refunds_of(charge_id, reference)
            except GatewayUnreachable as unreachable:
                return Unknown(str(unreachable))
            if made:
                return outcomes.refund_outcome(made[0])
            params["metadata"] = {REFUND_REFERENCE: reference}
        return await self._operate(
            "POST /v1/refunds",
            lambda: self._client.v1.refunds.create_async(params, self._options(key)),  # type: ignore[arg-type]
            outcomes.refund_outcome,
        )

    async def find_refunds(
        self, reference: str, charge_id: str | None = None
    ) -> list[GatewayRefund]:
        if charge_id is None:
            # Stripe lists refunds by payment, not by metadata: without it nothing can be found.
            raise GatewayUnreachable("a refund is found at Stripe by its payment")
        return [outcomes.found_refund(r) for r in await self._refunds_of(charge_id, reference)]

    async def _refunds_of(self, charge_id: str, reference: str) -> list[Mapping[str, Any]]:
        refunds = await self._find(
            "GET /v1/refunds",
            lambda: self._client.v1.refunds.list_async(
                {"payment_intent": _checked(charge_id), "limit": _REFUND_PAGE}
            ),
        )
        return [r for r in refunds if reference_of(r, REFUND_REFERENCE) == reference]

    # --- payouts -------------------------------------------------------------------------

    async def payout(self, request: PayoutRequest) -> PayoutOutcome:
        params = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "metadata": {
                PAYOUT_REFERENCE: _checked(request.payout_id),
                MERCHANT_REFERENCE: _checked(request.merchant_id),
            },
        }
        if request.destination is not None:
            params["destination"] = _checked(request.destination)
        options = self._options(payout_key(request.payout_id))
        if request.account is not None:
            options["stripe_account"] = _checked(request.account)
        return await self._operate(
            "POST /v1/payouts",
            lambda: self._client.v1.payouts.create_async(params, options),  # type: ignore[arg-type]
            outcomes.payout_outcome,
        )

    async def find_payout(self, payout_id: str, gateway_payout_id: str) -> FoundPayout:
        """The payout as Stripe has it now, by its id there."""
        found = await self._fetch(
            "GET /v1/payouts/{id}",
            lambda: self._client.v1.payouts.retrieve_async(_checked(gateway_payout_id)),
            outcomes.payout_outcome,
        )
        if found is None:
            raise GatewayUnreachable(f"Stripe has no payout {gateway_payout_id}")
        return found

    # --- calls ---------------------------------------------------------------------------

    def _options(self, key: str) -> stripe.RequestOptions:
        return {"idempotency_key": key}

    async def _call(
        self,
        name: str,
        call: Callable[[], Awaitable[Any]],
        read: Callable[[Mapping[str, Any]], R],
    ) -> R | Declined | Rejected | Unknown:
        """One operation, retried as ``verdict`` says; its answer read by ``read``."""
        try:
            answer = await self._attempt(name, call)
            return _read(answer, read)
        except (stripe.StripeError, TimeoutError, outcomes.MalformedAnswer) as error:
            verdict = outcomes.verdict(error)
            if isinstance(verdict.outcome, Unknown) and verdict.outcome.reason in _OPERATOR:
                log.error("Stripe refused FlowPay's key (%s): %s", name, verdict.outcome.reason)
            return verdict.outcome

    async def _operate(
        self,
        name: str,
        call: Callable[[], Awaitable[Any]],
        read: Callable[[Mapping[str, Any]], R],
    ) -> R | Rejected | Unknown:
        """``_call`` for an operation no card can decline: a card error is a refusal."""
        outcome = await self._call(name, call, read)
        if isinstance(outcome, Declined):
            return Rejected(f"card error {outcome.code}")
        return outcome

    async def _fetch(
        self,
        name: str,
        call: Callable[[], Awaitable[Any]],
        read: Callable[[Mapping[str, Any]], R],
    ) -> R | None:
        """One object by its id, read by ``read``; None if Stripe has none (404);
        GatewayUnreachable without an answer, or with one out of shape."""
        try:
            return _read(await self._attempt(name, call), read)
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return None
            raise GatewayUnreachable(_reason(error)) from None
        except (stripe.StripeError, TimeoutError) as error:
            raise GatewayUnreachable(_reason(error)) from None
        except outcomes.MalformedAnswer:
            raise GatewayUnreachable("malformed_answer") from None

    async def _find(self, name: str, call: Callable[[], Awaitable[Any]]) -> list[Mapping[str, Any]]:
        """A list or search's objects; GatewayUnreachable without an answer."""
        try:
            page = await self._attempt(name, call)
        except (stripe.StripeError, TimeoutError) as error:
            raise GatewayUnreachable(_reason(error)) from None
        data = page.to_dict().get("data")
        if not isinstance(data, list) or not all(isinstance(o, Mapping) for o in data):
            raise GatewayUnreachable("malformed_answer")
        return data

    async def _attempt(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        """The call, each attempt within the deadline, retried while ``verdict`` says so."""

        async def once() -> T:
            try:
                async with asyncio.timeout(self._deadline_s):
                    result = await call()
            except (stripe.StripeError, TimeoutError) as error:
                _count(name, error)
                raise
            _count(name, None)
            return result

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        return await retrying(once)


# Unknown outcomes an operator must mend (the key): logged as errors, the key never shown.
_OPERATOR: Final = frozenset({"authentication", "permission"})


def _retryable(error: BaseException) -> bool:
    if not isinstance(error, stripe.StripeError | TimeoutError):
        return False
    return outcomes.verdict(error).retry


def _reason(error: stripe.StripeError | TimeoutError) -> str:
    outcome = outcomes.verdict(error).outcome
    return outcome.reason if isinstance(outcome, Unknown) else type(outcome).__name__.lower()


def _read(answer: Any, read: Callable[[Mapping[str, Any]], R]) -> R:
    as_dict = answer.to_dict() if isinstance(answer, stripe.StripeObject) else None
    if not isinstance(as_dict, dict):
        raise outcomes.MalformedAnswer("an answer that is not a Stripe object")
    return read(as_dict)


def _checked(value: str) -> str:
    """An id that goes into a URL path or a search query: nothing to escape, or refused."""
    if not ID.fullmatch(value):
        raise ValueError(f"not an id Stripe could have made: {value[:40]!r}")
    return value


def _as_charge(payment: GatewayPayment) -> GatewayCharge:
    """A PaymentIntent as today's processor reads a look-up: succeeded and declined settle the
    payment; any other status (requires_action, processing, ...) leaves it to be asked again."""
    match payment.outcome:
        case Charged():
            return GatewayCharge(payment.charge_id, "succeeded", payment.amount_received, None)
        case Declined(code=reason):
            return GatewayCharge(payment.charge_id, "declined", payment.amount, reason)
        case Authorized():
            status = "requires_capture"
        case AwaitingCustomer():
            status = "requires_action"
        case Pending(status=pending):
            status = pending
        case Canceled():
            status = "canceled"
    return GatewayCharge(payment.charge_id, status, payment.amount, None)


def _count(name: str, error: stripe.StripeError | TimeoutError | None) -> None:
    """One HTTP attempt in the processor's attempt metrics, as the simulator's are counted."""
    method, path = name.split(" ", 1)
    if error is None:
        metrics.attempted(method, path, None, 200)
    elif isinstance(error, TimeoutError):
        metrics.attempted(method, path, httpx.ReadTimeout("deadline"))
    elif isinstance(error, stripe.APIConnectionError):
        metrics.attempted(method, path, error.__cause__ or error)
    else:
        metrics.attempted(method, path, None, error.http_status or 0)
