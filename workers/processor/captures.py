"""Manual capture: the processor executes the orchestrator's authorize, capture and void commands
(and hands its payout commands to ``workers.processor.payouts``).

Each command is done against the gateway with the key derived from the payment id and the
operation (a resend finds what the first call did, never does it twice), then recorded, with
the payment's state change and the event that answers it, in one transaction
(``ProcessorStore.execute``). A redelivered command is found recorded and changes nothing,
charging nothing. A resend (``attempt`` > 1) of a command already done is answered again from
the payment's state. An unknown outcome (timeout, 5xx, 409) is looked up at once; one the
gateway cannot yet account for is a ``TransientError``: the engine takes the command again
after a backoff (same keys), and nothing is ever taken for a decline.
"""

from __future__ import annotations

import logging
from typing import Any

from workers.core.commands import Authorize, Capture, Command, CommandType, Payout, Void
from workers.core.consuming import Batch, Received
from workers.core.delivery import headers_of
from workers.core.errors import PermanentError, TransientError
from workers.core.events import Canceled as CanceledEvent
from workers.core.events import EventType, Failed, RequiresAction, RequiresCapture, Succeeded
from workers.core.observe import handling
from workers.processor.charging import gather_all
from workers.processor.gateway import (
    AwaitingCustomer,
    Charged,
    ChargeRequest,
    Declined,
    GatewayUnreachable,
    Rejected,
)
from workers.processor.operations import (
    Authorized,
    Canceled,
    Captured,
    GatewayPayment,
    OperationsGateway,
    cancel_key,
    capture_key,
)
from workers.processor.payouts import Payouts
from workers.processor.states import Move, State, apply
from workers.processor.store import Answer, Change, Payment, ProcessorStore

log = logging.getLogger(__name__)

ROLE = "processor"


class Captures:
    """The commands subscriber's handlers (``workers.processor.worker.COMMAND_ROUTES``)."""

    def __init__(self, store: ProcessorStore, gateway: OperationsGateway) -> None:
        self.store = store
        self.gateway = gateway
        self.payouts = Payouts(store, gateway)

    async def execute(self, batch: Batch) -> None:
        """Each command of the batch, a round at a time (no round holds a payment twice)."""
        for round_ in batch.rounds():
            await gather_all(self._one(item) for item in round_)

    async def _one(self, item: Received) -> None:
        command = item.command
        with handling(ROLE, headers_of(item.message)):
            if await self.store.command_seen(command.command_id):
                return
            if isinstance(command.data, Payout):
                await self.payouts.execute(command)
                return
            payment = await self.store.get(command.subject)
            change = await self._change(command, payment)
            await self.store.execute(command, change, lambda p: answer(command, p, change))

    async def _change(self, command: Command, payment: Payment | None) -> Change | None:
        """What the command changes, after its gateway call; None: done before (a resend)."""
        data = command.data
        if isinstance(data, Authorize):
            return None if payment is not None else await self._authorize(command, data)
        if payment is None:
            raise PermanentError(f"{command.type} of {command.subject}: no authorization known")
        if payment.state != State.REQUIRES_CAPTURE:
            return None
        if isinstance(data, Capture):
            return await self._capture(payment, data)
        if isinstance(data, Void):
            return await self._void(payment)
        raise PermanentError(f"the processor does not execute {command.type} commands")

    async def _authorize(self, command: Command, data: Authorize) -> Change:
        request = ChargeRequest(
            command.subject, data.amount, data.currency, data.payment_method, "manual"
        )
        outcome = await self.gateway.authorize(request)
        if not isinstance(outcome, (Authorized, AwaitingCustomer, Declined, Rejected)):
            found = await self._look_up(command.subject)
            outcome = self._settled(found, Authorized, AwaitingCustomer, Declined)
        row: dict[str, Any] = {
            "payment_id": command.subject, "merchant_id": command.merchant_id,
            "amount": data.amount, "currency": data.currency,
            "payment_method": data.payment_method, "correlation_id": command.correlation_id,
        }  # fmt: skip
        charge: str | None
        reason: str | None
        action = None
        match outcome:
            case Authorized(charge_id):
                state, charge, reason = apply(State.INITIATED, Move.AUTHORIZE), charge_id, None
            case AwaitingCustomer(charge_id, next_action):
                # 3-D Secure: the customer authenticates, then the reconciler's look-up or
                # Stripe's report moves it on to requires_capture (``workers.processor.waits``).
                state, charge, reason = apply(State.INITIATED, Move.REQUIRE_ACTION), charge_id, None
                action = next_action.shown()
            case Declined(code):
                state, charge, reason = apply(State.INITIATED, Move.DECLINE), None, code
            case _:
                log.error("gateway refused the authorization of %s: %s", command.subject, outcome)
                state, charge, reason = State.FAILED, None, "gateway_error"
        params = {**row, "state": state, "charge_id": charge, "failure_reason": reason}
        return Change("payment_authorized", params, action)

    async def _capture(self, payment: Payment, data: Capture) -> Change:
        key = capture_key(payment.payment_id)
        assert payment.charge_id is not None, "an authorization without its id"
        outcome = await self.gateway.capture(payment.charge_id, data.amount_to_capture, key)
        match outcome:
            case Captured(charge_id, amount):
                return _move(payment, Move.CAPTURE, charge_id=charge_id, amount=amount)
            case Rejected(detail):
                log.error("gateway refused the capture of %s: %s", payment.payment_id, detail)
                # A capture releases what it does not take: a refused one, all of it.
                await self._release(payment)
                return _move(payment, Move.CAPTURE_FAIL, reason="gateway_error")
        found = await self._look_up(payment.payment_id, payment.charge_id)
        charged = self._settled(found, Charged)
        assert isinstance(charged, Charged)
        captured = next(f.amount_received for f in found if f.outcome == charged)
        return _move(payment, Move.CAPTURE, charge_id=charged.charge_id, amount=captured)

    async def _void(self, payment: Payment) -> Change:
        refused = await self._release(payment)
        if refused is not None:
            raise PermanentError(f"gateway refused the void of {payment.payment_id}: {refused}")
        return _move(payment, Move.VOID)

    async def _release(self, payment: Payment) -> Rejected | None:
        """Void the payment's authorization at the gateway; the gateway's refusal if it refused
        (it holds nothing to void). An unknown outcome is looked up: TransientError until the
        gateway shows the authorization canceled."""
        assert payment.charge_id is not None, "an authorization without its id"
        outcome = await self.gateway.cancel(payment.charge_id, cancel_key(payment.payment_id))
        if isinstance(outcome, Rejected):
            return outcome
        if not isinstance(outcome, Canceled):
            self._settled(await self._look_up(payment.payment_id, payment.charge_id), Canceled)
        return None

    async def _look_up(self, payment_id: str, charge_id: str | None = None) -> list[GatewayPayment]:
        try:
            return await self.gateway.look_up(payment_id, charge_id)
        except GatewayUnreachable as exc:
            raise TransientError(f"{payment_id}: outcome unknown, gateway unreachable") from exc

    @staticmethod
    def _settled(found: list[GatewayPayment], *kinds: type) -> Any:
        """The first outcome found of ``kinds``; TransientError (taken again later) if none."""
        for payment in found:
            if isinstance(payment.outcome, kinds):
                return payment.outcome
        raise TransientError(f"outcome unknown; the gateway has {[f.outcome for f in found]}")


def _move(
    payment: Payment,
    move: Move,
    *,
    charge_id: str | None = None,
    amount: int | None = None,
    reason: str | None = None,
) -> Change:
    from_state = State(payment.state)
    params = {"payment_id": payment.payment_id, "from_state": from_state,
              "state": apply(from_state, move), "charge_id": charge_id,
              "amount_received": amount, "failure_reason": reason}  # fmt: skip
    return Change("payment_move", params)


def answer(command: Command, payment: Payment, change: Change | None = None) -> Answer | None:
    """The event that answers ``command``, from the payment as it stands once it is executed
    (and the ``change`` executing it made); None when the payment has moved past what the
    command asked, or waits for its customer since an earlier try (nothing to answer)."""
    state = State(payment.state)
    if state == State.FAILED and command.type in (CommandType.AUTHORIZE, CommandType.CAPTURE):
        return EventType.FAILED, Failed(reason=payment.failure_reason or "gateway_error")
    if state == State.REQUIRES_ACTION and change is not None and change.action is not None:
        assert payment.charge_id is not None
        waiting = RequiresAction(charge_id=payment.charge_id, next_action=change.action)
        return EventType.REQUIRES_ACTION, waiting
    if command.type == CommandType.AUTHORIZE and state == State.REQUIRES_CAPTURE:
        assert payment.charge_id is not None
        hold = RequiresCapture(authorization_id=payment.charge_id, amount_capturable=payment.amount)
        return EventType.REQUIRES_CAPTURE, hold
    if command.type == CommandType.CAPTURE and state == State.SUCCEEDED:
        assert payment.charge_id is not None
        return EventType.SUCCEEDED, Succeeded(
            charge_id=payment.charge_id, amount_captured=payment.received
        )
    if isinstance(command.data, Void) and state == State.CANCELED:
        reason = command.data.cancellation_reason
        return EventType.CANCELED, CanceledEvent(cancellation_reason=reason)
    return None
