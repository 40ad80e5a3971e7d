"""The processor's PostgreSQL record: every state change commits with the event it emits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from workers.core import tracing
from workers.core.events import (
    ChargeReversed,
    Event,
    EventData,
    EventType,
    Failed,
    Initiated,
    Processing,
    Refunded,
    RefundFailed,
    RefundRequested,
    Succeeded,
    new_event,
)
from workers.core.outbox import stage_async
from workers.core.sql import load_queries
from workers.processor.states import Move, State, apply, refund_move

Q = load_queries("workers.processor")
SOURCE: Final = "flowpay/processor"
SCHEMA: Final = "processor"


@dataclass(frozen=True)
class Payment:
    payment_id: str
    merchant_id: str
    amount: int
    currency: str
    payment_method: str
    correlation_id: str
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

    async def start(self, event: Event) -> Payment:
        """Record the payment as processing (once) with its ``payment.processing`` event."""
        data = event.payload(Initiated)
        async with self.pool.connection() as conn, conn.transaction():
            inserted = await conn.execute(
                Q["payment_insert"],
                {
                    "payment_id": event.payment_id,
                    "merchant_id": event.merchant_id,
                    "amount": data.amount,
                    "currency": data.currency,
                    "payment_method": data.payment_method,
                    "correlation_id": event.correlation_id,
                    "state": apply(State.INITIATED, Move.START),
                    "traceparent": tracing.current_traceparent(),
                },
            )
            if inserted.rowcount:
                await self._emit(
                    conn,
                    event.payment_id,
                    event.merchant_id,
                    event.correlation_id,
                    EventType.PROCESSING,
                    Processing(),
                )
            payment = await self._get(conn, event.payment_id)
        assert payment is not None
        return payment

    async def get(self, payment_id: str) -> Payment | None:
        async with self.pool.connection() as conn:
            return await self._get(conn, payment_id)

    async def succeed(self, payment: Payment, charge_id: str) -> bool:
        state = apply(State.PROCESSING, Move.SUCCEED)
        return await self._settle(
            payment,
            state,
            charge_id,
            None,
            None,
            EventType.SUCCEEDED,
            Succeeded(charge_id=charge_id),
        )

    async def fail(self, payment: Payment, reason: str, watch_until: datetime | None) -> bool:
        """processing -> failed; ``watch_until`` keeps the reconciler looking for a late charge."""
        state = apply(State.PROCESSING, Move.FAIL)
        return await self._settle(
            payment, state, None, reason, watch_until, EventType.FAILED, Failed(reason=reason)
        )

    async def _settle(
        self,
        payment: Payment,
        state: State,
        charge_id: str | None,
        reason: str | None,
        next_check_at: datetime | None,
        kind: EventType,
        data: EventData,
    ) -> bool:
        async with self.pool.connection() as conn, conn.transaction():
            changed = await conn.execute(
                Q["payment_settle"],
                {
                    "payment_id": payment.payment_id,
                    "state": state,
                    "charge_id": charge_id,
                    "failure_reason": reason,
                    "next_check_at": next_check_at,
                },
            )
            if changed.rowcount:
                await self._emit(
                    conn,
                    payment.payment_id,
                    payment.merchant_id,
                    payment.correlation_id,
                    kind,
                    data,
                )
        return bool(changed.rowcount)

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
        return await self._claim("payments_due", limit, lease_s)

    async def claim_due_refunds(self, limit: int, lease_s: float) -> list[str]:
        """Refunds whose re-check is due, each leased to this reconciler for ``lease_s``."""
        return await self._claim("refunds_due", limit, lease_s)

    async def _claim(self, query: str, limit: int, lease_s: float) -> list[str]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(Q[query], {"limit": limit, "lease_s": lease_s})
            return [str(row[0]) for row in await cursor.fetchall()]

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
        await self.attempt(payment_id, kind, name, _detail(outcome), duration_ms)

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

    async def refund_requested(self, event: Event) -> None:
        data = event.payload(RefundRequested)
        async with self.pool.connection() as conn:
            await conn.execute(
                Q["refund_insert"], _refund_row(event.payment_id, data, "requested", None)
            )

    async def refund_refused(self, event: Event, correlation_id: str, reason: str) -> None:
        """Answer a refund request with ``payment.refund_failed`` (once)."""
        data = event.payload(RefundRequested)
        async with self.pool.connection() as conn, conn.transaction():
            inserted = await conn.execute(
                Q["refund_insert"], _refund_row(event.payment_id, data, "failed", reason)
            )
            settled = await _settle_refund(conn, data.refund_id, "failed", None, reason)
            if inserted.rowcount or settled:
                await self._emit(
                    conn,
                    event.payment_id,
                    event.merchant_id,
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
        event = new_event(
            kind,
            payment_id=payment_id,
            merchant_id=merchant_id,
            data=data,
            source=SOURCE,
            correlation_id=correlation_id,
        )
        async with conn.cursor() as cursor:
            await stage_async(cursor, SCHEMA, [event])


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


def _detail(outcome: object) -> str | None:
    for name in ("charge_id", "code", "detail", "reason", "refund_id"):
        value = getattr(outcome, name, None)
        if value is not None:
            return str(value)
    return None


def _refund_row(
    payment_id: str, data: RefundRequested, status: str, reason: str | None
) -> dict[str, Any]:
    return {
        "refund_id": data.refund_id,
        "payment_id": payment_id,
        "amount": data.amount,
        "status": status,
        "failure_reason": reason,
    }
