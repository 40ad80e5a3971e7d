"""From messages to ledger writes: each event through the posting rules, in offset order.

Pure apart from the inputs it is given (the partitions' cursors, the payments' states, the event
ids already applied), so the live consumer and replay plan identically: whatever the batch
boundaries, the same log gives the same transactions, ids and hash chain.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from workers.core.consuming import Received
from workers.core.errors import EventError, TransientError
from workers.core.events import (
    Canceled,
    CancelRequested,
    CaptureRequested,
    ChargeReversed,
    Event,
    EventData,
    Failed,
    GatewayReported,
    Initiated,
    PayoutFailed,
    PayoutPaid,
    PayoutRequested,
    Processing,
    Refunded,
    RefundFailed,
    RefundRequested,
    RequiresAction,
    RequiresCapture,
    Succeeded,
)
from workers.core.kafka import Message
from workers.ledger.chain import EntryRecord, TxnRecord, digest
from workers.ledger.rules import PaymentState, PostingRules, Transfer, transaction_id
from workers.ledger.store import ChainedTxn, Cursor, DeadLetterRow, EventRow, Partition, Writes

log = logging.getLogger(__name__)

# True: dead-letter the message now; False: roll the batch back and retry it later.
Verdict = Callable[[Message, BaseException], bool]


class NeedsRetry(TransientError):
    """A message failed in a way worth retrying (its verdict is counted by the applier): roll
    the whole batch back and take it again after a backoff."""


# What the ledger plans from: a message and what decoding it gave (the engine's type).
Item = Received


# What the ledger holds for a payment it has not seen yet (states are immutable: shared).
NEW_PAYMENT: Final = PaymentState()


@dataclass
class Plan:
    writes: Writes
    # Messages to dead-letter, sent only once the writes that record them have succeeded.
    rejected: list[tuple[Message, BaseException]] = field(default_factory=list)

    def reject(self, item: Item, event_id: uuid.UUID | None, exc: BaseException) -> None:
        topic, partition = item.partition
        detail = str(exc)[:2000]
        self.writes.dead_letters.append(
            DeadLetterRow(topic, partition, item.offset, event_id, type(exc).__name__, detail)
        )
        self.rejected.append((item.message, exc))


class Planner:
    def __init__(self, rules: PostingRules) -> None:
        self.rules = rules

    def plan(
        self,
        items: Sequence[Item],
        cursors: dict[Partition, Cursor],
        states: dict[str, PaymentState],
        seen: set[uuid.UUID],
        verdict: Verdict,
    ) -> Plan:
        """The writes for ``items``; ``states`` and ``seen`` are updated as events apply.

        A rule that raises gets ``verdict``: dead-letter the message, or raise NeedsRetry."""
        plan = Plan(Writes(cursors=dict(cursors)))
        for item in items:
            cursor = plan.writes.cursors[item.partition]
            if item.offset < cursor.next_offset:
                continue  # applied by an earlier batch: a redelivery
            cursor = Cursor(item.offset + 1, cursor.seq, cursor.hash)
            plan.writes.cursors[item.partition] = cursor
            if isinstance(item.decoded, EventError):
                plan.reject(item, None, item.decoded)
            elif (event := item.event).event_id not in seen:  # else: the same event again
                self._apply(plan, item, event, states, seen, verdict)
        return plan

    def reject(self, item: Item, cursors: dict[Partition, Cursor], exc: BaseException) -> Plan:
        """Writes that only record ``item`` as dead-lettered and move its partition past it."""
        cursor = cursors[item.partition]
        plan = Plan(Writes(cursors={**cursors}))
        plan.writes.cursors[item.partition] = Cursor(item.offset + 1, cursor.seq, cursor.hash)
        event_id = item.decoded.event_id if isinstance(item.decoded, Event) else None
        plan.reject(item, event_id, exc)
        return plan

    def _apply(
        self,
        plan: Plan,
        item: Item,
        event: Event,
        states: dict[str, PaymentState],
        seen: set[uuid.UUID],
        verdict: Verdict,
    ) -> None:
        state = states.get(event.payment_id) or NEW_PAYMENT
        try:
            transfers = self.rules.transfers(event, state)
        except Exception as exc:
            if not verdict(item.message, exc):
                raise NeedsRetry(f"posting {event.type} {event.event_id}: {exc!r}") from exc
            plan.reject(item, event.event_id, exc)
            return
        seen.add(event.event_id)
        plan.writes.events.append(_event_row(item, event, "posted" if transfers else "recorded"))
        for index, transfer in enumerate(transfers):
            chained = self._chain(item, event, index, transfer, plan.writes.cursors)
            plan.writes.txns.append(chained)
            for line in transfer.lines:
                plan.writes.accounts[line.account.id] = line.account
            state = state.after(chained.record.id, transfer, event.merchant_id)
        states[event.payment_id] = state

    def _chain(
        self,
        item: Item,
        event: Event,
        index: int,
        transfer: Transfer,
        cursors: dict[Partition, Cursor],
    ) -> ChainedTxn:
        """Chain one transfer onto its partition's chain; returns what is stored."""
        topic, partition = item.partition
        cursor = cursors[item.partition]
        record = TxnRecord(
            id=transaction_id(event.event_id, index),
            kind=transfer.kind.value,
            payment_id=event.payment_id,
            merchant_id=event.merchant_id,
            reference=transfer.reference,
            pending_of=transfer.resolves,
            event_id=event.event_id,
            topic=topic,
            partition=partition,
            offset=item.offset,
            seq=cursor.seq + 1,
            entries=tuple(
                EntryRecord(n, line.account.id, line.direction.value, line.phase.value,
                            line.amount, line.currency)
                for n, line in enumerate(transfer.lines, start=1)
            ),
        )  # fmt: skip
        link = digest(cursor.hash, record)
        cursors[item.partition] = Cursor(cursor.next_offset, record.seq, link)
        return ChainedTxn(record, cursor.hash, link)


# What each payload gives its ``events`` row: the attributes of its amount, its reference and
# its currency (None: the column stays empty). By exact type, as a decoded event's payload is
# exactly PAYLOADS[its type]; a lookup instead of isinstance tests down a chain of unions. Every
# payload is listed (a test holds it to ``PAYLOADS``): a new one must say what it records.
_ROW_FIELDS: Final[dict[type[EventData], tuple[str | None, str | None, str | None]]] = {
    Initiated: ("amount", None, "currency"),
    Processing: (None, None, None),
    RequiresCapture: ("amount_capturable", "authorization_id", None),
    RequiresAction: (None, "charge_id", None),
    CaptureRequested: ("amount_to_capture", None, None),
    CancelRequested: (None, None, None),
    Succeeded: ("amount_captured", "charge_id", None),
    Failed: (None, None, None),
    Canceled: (None, None, None),
    RefundRequested: ("amount", "refund_id", None),
    Refunded: ("amount", "refund_id", None),
    RefundFailed: (None, "refund_id", None),
    ChargeReversed: ("amount", "charge_id", None),
    GatewayReported: ("amount", "gateway_event_id", "currency"),
    PayoutRequested: ("amount", None, "currency"),
    PayoutPaid: ("amount", "gateway_payout_id", None),
    PayoutFailed: (None, None, None),
}


def _event_row(item: Item, event: Event, outcome: str) -> EventRow:
    topic, partition = item.partition
    data = event.data
    amount, reference, currency = _ROW_FIELDS[type(data)]
    return EventRow(
        event.event_id,
        event.type.value,
        event.payment_id,
        event.merchant_id,
        None if amount is None else getattr(data, amount),
        None if currency is None else getattr(data, currency),
        None if reference is None else getattr(data, reference),
        outcome,
        topic,
        partition,
        item.offset,
    )
