"""The processor's PostgreSQL record: every state change commits with the event it emits."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from workers.core.commands import Charge, Command, Payout
from workers.core.commands import Refund as RefundCommand
from workers.core.errors import TransientError
from workers.core.events import (
    ChargeReversed,
    EventData,
    EventType,
    PayoutFailed,
    PayoutPaid,
    Refunded,
    RefundFailed,
    new_event,
)
from workers.core.events import NextAction as ActionShown
from workers.core.outbox import OutboxRow, outbox_row, stage_rows
from workers.core.sql import load_queries
from workers.processor.settlements import Attempt, Defer, Settle, Settlement, detail_of
from workers.processor.states import Move, State, apply, reaches, refund_move

Q = load_queries("workers.processor")
SOURCE: Final = "flowpay/processor"
SCHEMA: Final = "processor"


@dataclass(frozen=True)
class NewPayment:
    """A payment to start, as the orchestrator's charge command describes it."""

    payment_id: str
    merchant_id: str
    amount: int
    currency: str
    payment_method: str
    correlation_id: str

    @classmethod
    def of(cls, command: Command) -> NewPayment:
        data = command.data
        assert isinstance(data, Charge), f"a {command.type} command starts no payment"
        return cls(
            command.subject,
            command.merchant_id,
            data.amount,
            data.currency,
            data.payment_method,
            command.correlation_id,
        )


@dataclass(frozen=True)
class Payment(NewPayment):
    """A payment as the processor holds it."""

    state: str
    charge_id: str | None
    failure_reason: str | None
    refunded_amount: int
    next_check_at: datetime | None
    checks: int
    reversed_charge_id: str | None
    created_at: datetime
    updated_at: datetime
    traceparent: str | None = None  # of the span that started it, for the reconciler's checks
    settled_at: datetime | None = None  # when it left processing (None while processing)
    # What a manual capture took (at most ``amount``; the rest was released). None: all of it.
    amount_received: int | None = None
    capture_method: str = "automatic"  # manual: the orchestrator's authorize made it

    @property
    def received(self) -> int:
        """What the payment took from the card, so what refunds may give back."""
        return self.amount if self.amount_received is None else self.amount_received


@dataclass(frozen=True)
class Staged:
    """What starting a payment stores beside it, made under the span it is started in."""

    traceparent: str | None  # that span's, for the reconciler's later checks
    row: OutboxRow  # its payment.processing event


@dataclass(frozen=True)
class Change:
    """A manual payment's state change, as a named query and its parameters; ``action``: what
    its customer must do, when the authorization waits for them (requires_action)."""

    query: str  # payment_authorized | payment_move
    params: Mapping[str, Any]
    action: ActionShown | None = None


# The event that answers a command.
Answer = tuple[EventType, EventData]


@dataclass(frozen=True)
class PayoutOutcomeRow:
    """What the gateway did with a payout: paid, failed, or in_transit (paid or failed later);
    its id there, why it failed."""

    status: str
    gateway_payout_id: str | None
    failure: str | None


@dataclass(frozen=True)
class PayoutRecord:
    """A payout as the processor holds it."""

    payout_id: str
    merchant_id: str
    amount: int
    currency: str
    status: str  # in_transit | paid | failed
    gateway_payout_id: str | None
    failure: str | None
    correlation_id: str | None
    checks: int
    # When the reconciler looks it up next; None once it is left to the gateway's report.
    next_check_at: datetime | None = None


@dataclass(frozen=True)
class Refund:
    refund_id: str
    payment_id: str
    amount: int
    status: str
    gateway_refund_id: str | None
    failure_reason: str | None
    next_check_at: datetime | None = None  # set: its outcome is unknown, the reconciler owns it
    checks: int = 0


class ProcessorStore:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def start_many(
        self, payments: Sequence[NewPayment], staged: Sequence[Staged]
    ) -> dict[str, Payment]:
        """Record each payment as processing (once) with its ``payment.processing`` event, all
        in one transaction; every payment's row as it stands then."""
        columns = {
            name: [getattr(p, field) for p in payments]
            for name, field in (
                ("payment_ids", "payment_id"), ("merchant_ids", "merchant_id"),
                ("amounts", "amount"), ("currencies", "currency"), ("methods", "payment_method"),
                ("correlation_ids", "correlation_id"),
            )
        }  # fmt: skip
        params = {
            **columns,
            "traceparents": [s.traceparent for s in staged],
            "state": apply(State.INITIATED, Move.START),
        }
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(Q["payments_start"], params)
            found = {row[0]: (Payment(*row[:-1]), bool(row[-1])) for row in await cursor.fetchall()}
            if len(found) < len({p.payment_id for p in payments}):
                # Inserted meanwhile by another transaction (a processor in a rebalance's
                # overlap): its row is there to be read on the next try.
                raise TransientError("a payment of the batch was started elsewhere meanwhile")
            rows = [s.row for p, s in zip(payments, staged, strict=True) if found[p.payment_id][1]]
            await stage_rows(conn, SCHEMA, rows)
        return {payment_id: payment for payment_id, (payment, _new) in found.items()}

    async def settle_many(self, group: Sequence[Settlement]) -> set[str]:
        """A group of settlements in one transaction: their attempt rows, the payments they
        settle (each with its event, once) and those they defer; the payments settled."""
        async with self.pool.connection() as conn, conn.transaction():
            await _insert_attempts(conn, [(s.payment_id, a) for s in group for a in s.attempts])
            settled = await _settle(conn, [s for s in group if isinstance(s.verdict, Settle)])
            await _defer(conn, [s for s in group if isinstance(s.verdict, Defer)])
        return settled

    async def get(self, payment_id: str) -> Payment | None:
        async with self.pool.connection() as conn:
            return await self._get(conn, payment_id)

    async def defer(self, payment: Payment, after_s: float, *, counted: bool = True) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                Q["payment_defer"],
                {
                    "payment_id": payment.payment_id,
                    "state": payment.state,
                    "after_s": after_s,
                    "counted": int(counted),
                },
            )

    async def claim_due(self, limit: int, lease_s: float) -> list[str]:
        """Payments whose re-check is due, each leased to this reconciler for ``lease_s``."""
        return await self._claim("payments", "payment_id", limit, lease_s)

    async def claim_due_refunds(self, limit: int, lease_s: float) -> list[str]:
        """Refunds whose re-check is due, each leased to this reconciler for ``lease_s``."""
        return await self._claim("refunds", "refund_id", limit, lease_s)

    async def claim_due_payouts(self, limit: int, lease_s: float) -> list[str]:
        """Payouts in transit whose look-up is due, each leased to this reconciler."""
        return await self._claim("payouts", "payout_id", limit, lease_s)

    async def _claim(self, table: str, key: str, limit: int, lease_s: float) -> list[str]:
        query = Q["due_claim"].format(table=sql.Identifier(table), key=sql.Identifier(key))
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query, {"limit": limit, "lease_s": lease_s})
            return [str(row[0]) for row in await cursor.fetchall()]

    async def recheck_refunds_now(self, payment_id: str) -> int:
        """Have the reconciler look at the payment's unknown refunds now; how many."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(Q["refunds_recheck_now"], {"payment_id": payment_id})
            return int(cursor.rowcount)

    async def release(self, payment_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(Q["payment_release"], {"payment_id": payment_id})

    async def reversed(self, payment: Payment, charge_id: str, amount: int) -> None:
        """Record that a late charge on a failed payment was refunded at the gateway."""
        async with self.pool.connection() as conn, conn.transaction():
            changed = await conn.execute(
                Q["payment_reversed"], {"payment_id": payment.payment_id, "charge_id": charge_id}
            )
            if changed.rowcount:
                await self._emit(
                    conn,
                    payment.payment_id,
                    payment.merchant_id,
                    payment.correlation_id,
                    EventType.CHARGE_REVERSED,
                    ChargeReversed(charge_id=charge_id, amount=amount),
                )

    async def record(self, payment_id: str, kind: str, outcome: object, duration_ms: int) -> None:
        """Record a gateway call by its outcome object (``Charged``, ``Unknown``, ...)."""
        name = type(outcome).__name__.lower()
        await self.attempt(payment_id, kind, name, detail_of(outcome), duration_ms)

    async def attempt(
        self, payment_id: str, kind: str, outcome: str, detail: str | None, duration_ms: int
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                Q["attempt_insert"],
                {
                    "payment_id": payment_id,
                    "kind": kind,
                    "outcome": outcome,
                    "detail": detail,
                    "duration_ms": duration_ms,
                },
            )

    async def refund(self, refund_id: str) -> Refund | None:
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(Refund))
            await cursor.execute(Q["refund_get"], {"refund_id": refund_id})
            found: Refund | None = await cursor.fetchone()
            return found

    async def refundable(self, payment_id: str) -> int:
        """What is left to refund of a payment, refunds still requested counted as made."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(Q["payment_refundable"], {"payment_id": payment_id})
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def defer_refund(self, refund: Refund, after_s: float) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                Q["refund_defer"], {"refund_id": refund.refund_id, "after_s": after_s}
            )

    async def refund_requested(self, command: Command) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(Q["refund_insert"], _refund_row(command, "requested", None))

    async def refund_refused(self, command: Command, correlation_id: str, reason: str) -> None:
        """Answer a refund command with ``payment.refund_failed`` (once)."""
        data = command.data
        assert isinstance(data, RefundCommand)
        async with self.pool.connection() as conn, conn.transaction():
            row = _refund_row(command, "failed", reason)
            inserted = await conn.execute(Q["refund_insert"], row)
            settled = await _settle_refund(conn, data.refund_id, "failed", None, reason)
            if inserted.rowcount or settled:
                await self._emit(
                    conn,
                    command.subject,
                    command.merchant_id,
                    correlation_id,
                    EventType.REFUND_FAILED,
                    RefundFailed(refund_id=data.refund_id, reason=reason),
                )

    async def refund_rejected(self, payment: Payment, refund: Refund, reason: str) -> None:
        """The gateway refused a requested refund: ``payment.refund_failed`` (once)."""
        async with self.pool.connection() as conn, conn.transaction():
            if await _settle_refund(conn, refund.refund_id, "failed", None, reason):
                await self._emit(
                    conn,
                    payment.payment_id,
                    payment.merchant_id,
                    payment.correlation_id,
                    EventType.REFUND_FAILED,
                    RefundFailed(refund_id=refund.refund_id, reason=reason),
                )

    async def refund_succeeded(
        self, payment: Payment, refund: Refund, gateway_refund_id: str
    ) -> None:
        """Settle the refund, add it to the payment, emit ``payment.refunded``.

        The payment's figures are read under its row lock: the reconciler may settle another
        refund of the same payment at the same time."""
        async with self.pool.connection() as conn, conn.transaction():
            if not await _settle_refund(
                conn, refund.refund_id, "succeeded", gateway_refund_id, None
            ):
                return
            locked = await conn.execute(
                Q["payment_lock_refunds"], {"payment_id": payment.payment_id}
            )
            now = await locked.fetchone()
            assert now is not None, "a refund of a payment never recorded"
            state = apply(State(now[0]), refund_move(int(now[1]), int(now[2]), refund.amount))
            cursor = await conn.execute(
                Q["payment_refunded"],
                {"payment_id": payment.payment_id, "amount": refund.amount, "state": state},
            )
            total = await cursor.fetchone()
            assert total is not None, "refunded a payment that is not succeeded"
            data = Refunded(
                refund_id=refund.refund_id, amount=refund.amount, refunded_total=int(total[0])
            )
            await self._emit(
                conn,
                payment.payment_id,
                payment.merchant_id,
                payment.correlation_id,
                EventType.REFUNDED,
                data,
            )

    async def command_seen(self, command_id: uuid.UUID) -> bool:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(Q["command_seen"], {"command_id": command_id})
            return await cursor.fetchone() is not None

    async def execute(
        self, command: Command, change: Change | None, answer: Callable[[Payment], Answer | None]
    ) -> bool:
        """In one transaction: record ``command`` as executed, make ``change`` (if any), and
        stage ``answer`` of the payment as it then stands. False: executed before (nothing is
        done again)."""
        async with self.pool.connection() as conn, conn.transaction():
            if not await _record_command(conn, command):
                return False
            if change is not None:
                await conn.execute(Q[change.query], change.params)
            payment = await self._get(conn, command.subject)
            reply = None if payment is None else answer(payment)
            if payment is not None and reply is not None:
                kind, data = reply
                await self._emit(
                    conn,
                    payment.payment_id,
                    payment.merchant_id,
                    payment.correlation_id,
                    kind,
                    data,
                )
        return True

    async def payout(self, payout_id: str) -> PayoutRecord | None:
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(PayoutRecord))
            await cursor.execute(Q["payout_get"], {"payout_id": payout_id})
            found: PayoutRecord | None = await cursor.fetchone()
            return found

    async def payout_sent(self, command: Command, outcome: PayoutOutcomeRow | None) -> None:
        """In one transaction: record ``command`` as executed and, with ``outcome`` (None: the
        payout was sent before), the payout, once, with the event that answers it when the
        gateway settled it at once (one in transit is answered when it lands)."""
        data = command.data
        assert isinstance(data, Payout)
        async with self.pool.connection() as conn, conn.transaction():
            if not await _record_command(conn, command) or outcome is None:
                return
            inserted = await conn.execute(
                Q["payout_insert"],
                {"payout_id": command.subject, "merchant_id": command.merchant_id,
                 "amount": data.amount, "currency": data.currency, "status": outcome.status,
                 "gateway_payout_id": outcome.gateway_payout_id,
                 "failure": outcome.failure, "correlation_id": command.correlation_id},
            )  # fmt: skip
            if inserted.rowcount and outcome.status != "in_transit":
                payout = PayoutRecord(command.subject, command.merchant_id, data.amount,
                                      data.currency, outcome.status, outcome.gateway_payout_id,
                                      outcome.failure, command.correlation_id, 0)  # fmt: skip
                await self._emit_payout(conn, payout)

    async def payout_landed(self, payout_id: str, outcome: PayoutOutcomeRow) -> bool:
        """A payout in transit, paid or failed at the gateway, with its event: once (False: it
        had landed already)."""
        params = {"payout_id": payout_id, "status": outcome.status, "failure": outcome.failure}
        async with self.pool.connection() as conn, conn.transaction():
            cursor = conn.cursor(row_factory=class_row(PayoutRecord))
            await cursor.execute(Q["payout_land"], params)
            landed = await cursor.fetchone()
            if landed is not None:
                await self._emit_payout(conn, landed)
        return landed is not None

    async def defer_payout(self, payout_id: str, after_s: float | None) -> None:
        """Look the payout in transit up again after ``after_s`` (None: leave it to the
        gateway's report)."""
        async with self.pool.connection() as conn:
            await conn.execute(Q["payout_defer"], {"payout_id": payout_id, "after_s": after_s})

    async def _emit_payout(self, conn: AsyncConnection[Any], payout: PayoutRecord) -> None:
        reply: EventData
        if payout.status == "paid":
            assert payout.gateway_payout_id is not None
            kind = EventType.PAYOUT_PAID
            reply = PayoutPaid(gateway_payout_id=payout.gateway_payout_id, amount=payout.amount)
        else:
            kind, reply = EventType.PAYOUT_FAILED, PayoutFailed(reason="payout_refused")
        # A payout recorded before its correlation id was kept: its own id stands in.
        correlation_id = payout.correlation_id or payout.payout_id
        await self._emit(conn, payout.payout_id, payout.merchant_id, correlation_id, kind, reply)

    async def attempts(self, payment_id: str) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(Q["attempts_of"], {"payment_id": payment_id})
            return list(await cursor.fetchall())

    async def _get(self, conn: AsyncConnection[Any], payment_id: str) -> Payment | None:
        cursor = conn.cursor(row_factory=class_row(Payment))
        await cursor.execute(Q["payment_get"], {"payment_id": payment_id})
        return await cursor.fetchone()

    async def _emit(
        self,
        conn: AsyncConnection[Any],
        payment_id: str,
        merchant_id: str,
        correlation_id: str,
        kind: EventType,
        data: EventData,
    ) -> None:
        row = event_row(payment_id, merchant_id, correlation_id, kind, data)
        await stage_rows(conn, SCHEMA, [row])


def event_row(
    payment_id: str, merchant_id: str, correlation_id: str, kind: EventType, data: EventData
) -> OutboxRow:
    """An event the processor emits, as its outbox row (under the current span)."""
    event = new_event(
        kind,
        payment_id=payment_id,
        merchant_id=merchant_id,
        data=data,
        source=SOURCE,
        correlation_id=correlation_id,
    )
    return outbox_row(event)


async def _insert_attempts(conn: AsyncConnection[Any], made: list[tuple[str, Attempt]]) -> None:
    if not made:
        return
    await conn.execute(
        Q["attempts_insert"],
        {
            "payment_ids": [payment_id for payment_id, _ in made],
            "kinds": [a.kind for _, a in made],
            "outcomes": [a.outcome for _, a in made],
            "details": [a.detail for _, a in made],
            "durations": [a.duration_ms for _, a in made],
        },
    )


async def _settle(conn: AsyncConnection[Any], settles: list[Settlement]) -> set[str]:
    """Each from the state it is in to its verdict's, once; their events staged for those it
    moved."""
    if not settles:
        return set()
    verdicts = [s.verdict for s in settles if isinstance(s.verdict, Settle)]
    for settlement, verdict in zip(settles, verdicts, strict=True):
        if not reaches(settlement.state, verdict.state):
            raise ValueError(f"no move takes a payment from {settlement.state} to {verdict.state}")
    cursor = await conn.execute(
        Q["payments_settle"],
        {
            "payment_ids": [s.payment_id for s in settles],
            "from_states": [s.state.value for s in settles],
            "states": [v.state.value for v in verdicts],
            "charge_ids": [v.charge_id for v in verdicts],
            "reasons": [v.reason for v in verdicts],
            "next_checks": [v.next_check_at for v in verdicts],
        },
    )
    settled = {str(row[0]) for row in await cursor.fetchall()}
    events = [v.event for s, v in zip(settles, verdicts, strict=True) if s.payment_id in settled]
    await stage_rows(conn, SCHEMA, events)
    return settled


async def _defer(conn: AsyncConnection[Any], defers: list[Settlement]) -> None:
    if not defers:
        return
    await conn.execute(
        Q["payments_defer"],
        {
            "payment_ids": [s.payment_id for s in defers],
            "states": [s.state.value for s in defers],
            "after_s": [s.verdict.after_s for s in defers if isinstance(s.verdict, Defer)],
            "charge_ids": [s.verdict.charge_id for s in defers if isinstance(s.verdict, Defer)],
            "counted": [1] * len(defers),
        },
    )


async def _settle_refund(
    conn: AsyncConnection[Any],
    refund_id: str,
    status: str,
    gateway_refund_id: str | None,
    reason: str | None,
) -> bool:
    """requested -> ``status``; False if it was settled already."""
    settled = await conn.execute(
        Q["refund_settle"],
        {
            "refund_id": refund_id,
            "status": status,
            "gateway_refund_id": gateway_refund_id,
            "failure_reason": reason,
        },
    )
    return bool(settled.rowcount)


def _refund_row(command: Command, status: str, reason: str | None) -> dict[str, Any]:
    data = command.data
    assert isinstance(data, RefundCommand), f"a {command.type} command is no refund"
    return {
        "refund_id": data.refund_id,
        "payment_id": command.subject,
        "amount": data.amount,
        "status": status,
        "failure_reason": reason,
    }


async def _record_command(conn: AsyncConnection[Any], command: Command) -> bool:
    """Record ``command`` as executed, in the caller's transaction; False: it was before."""
    recorded = await conn.execute(
        Q["command_record"],
        {"command_id": command.command_id, "payment_id": command.subject,
         "type": command.type.value},
    )  # fmt: skip
    return bool(recorded.rowcount)
