"""The posting rules and the planner, pure: no database, no Kafka."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from typing import Any

import pytest

from tests.helpers.messages import received
from tests.test_ledger_support import ev, mixed
from workers.core.events import (
    Canceled,
    CaptureRequested,
    ChargeReversed,
    EventType,
    Failed,
    Initiated,
    PayoutFailed,
    PayoutPaid,
    PayoutRequested,
    Processing,
    Refunded,
    RefundFailed,
    RefundRequested,
    RequiresCapture,
    Succeeded,
)
from workers.core.status import CancellationReason
from workers.ledger.chain import GENESIS, EntryRecord, TxnRecord, digest
from workers.ledger.posting import NeedsRetry, Planner, _event_row
from workers.ledger.rules import (
    STANDARD_RULES,
    Direction,
    Kind,
    PaymentState,
    Phase,
    PostingRefused,
    Transfer,
    transaction_id,
)
from workers.ledger.store import Cursor

INIT = Initiated(amount=1000, currency="USD", payment_method="pm_card_visa")


def nets(transfers: list[Transfer]) -> Counter[tuple[str, str, str]]:
    """Per (account, phase, currency): debits - credits."""
    total: Counter[tuple[str, str, str]] = Counter()
    for transfer in transfers:
        for line in transfer.lines:
            sign = 1 if line.direction is Direction.DEBIT else -1
            total[(line.account.id, line.phase.value, line.currency)] += sign * line.amount
    return total


def run(events: list[Any]) -> tuple[list[Transfer], PaymentState]:
    """Apply the standard rules to one payment's events in order, as the planner does."""
    state = PaymentState()
    written: list[Transfer] = []
    for event in events:
        for index, transfer in enumerate(STANDARD_RULES.transfers(event, state)):
            written.append(transfer)
            state = state.after(transaction_id(event.event_id, index), transfer, event.merchant_id)
    return written, state


def balanced(transfer: Transfer) -> bool:
    per: Counter[tuple[str, str]] = Counter()
    for line in transfer.lines:
        per[(line.currency, line.phase)] += (
            line.amount if line.direction is Direction.DEBIT else -line.amount
        )
    return len(transfer.lines) >= 2 and all(v == 0 for v in per.values())


def test_initiated_creates_a_pending_transfer_and_succeeded_posts_it() -> None:
    initiated = ev(EventType.INITIATED, "pay_1", INIT)
    transfers, state = run([initiated, ev(EventType.PROCESSING, "pay_1", Processing()),
                            ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch"))])  # fmt: skip
    assert [t.kind for t in transfers] == [Kind.AUTHORIZE, Kind.POST]
    assert all(balanced(t) for t in transfers)
    assert transfers[1].resolves == transaction_id(initiated.event_id, 0)
    assert {line.phase for line in transfers[0].lines} == {Phase.PENDING}
    assert nets(transfers) == {
        ("gateway_receivable:USD", "pending", "USD"): 0,
        ("merchant_payable:mer_a:USD", "pending", "USD"): 0,
        ("gateway_receivable:USD", "posted", "USD"): 1000,
        ("merchant_payable:mer_a:USD", "posted", "USD"): -1000,
    }
    assert state.resolution is Kind.POST
    assert state.posted == 1000


def test_failed_voids_the_pending_transfer_and_posts_nothing() -> None:
    transfers, state = run([ev(EventType.INITIATED, "pay_1", INIT),
                            ev(EventType.FAILED, "pay_1", Failed(reason="card_declined"))])  # fmt: skip
    assert [t.kind for t in transfers] == [Kind.AUTHORIZE, Kind.VOID]
    assert set(nets(transfers).values()) == {0}
    assert {line.phase for t in transfers for line in t.lines} == {Phase.PENDING}
    assert state.resolution is Kind.VOID


def test_a_pending_transfer_is_resolved_at_most_once() -> None:
    events = [
        ev(EventType.INITIATED, "pay_1", INIT),
        ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch")),
    ]
    _, state = run(events)
    with pytest.raises(PostingRefused, match="already post"):
        STANDARD_RULES.transfers(
            ev(EventType.FAILED, "pay_1", Failed(reason="card_declined")), state
        )
    with pytest.raises(PostingRefused, match="no pending transfer"):
        STANDARD_RULES.transfers(
            ev(EventType.SUCCEEDED, "pay_2", Succeeded(charge_id="c")), PaymentState()
        )
    with pytest.raises(PostingRefused, match="already has a pending"):
        STANDARD_RULES.transfers(ev(EventType.INITIATED, "pay_1", INIT), state)


def test_refunds_reverse_their_amount_and_never_exceed_the_charge() -> None:
    events = [ev(EventType.INITIATED, "pay_1", INIT), ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch")),
              ev(EventType.REFUNDED, "pay_1", Refunded(refund_id="re_1", amount=400, refunded_total=400))]  # fmt: skip
    transfers, state = run(events)
    assert transfers[-1].kind is Kind.REFUND
    assert transfers[-1].reference == "re_1"
    assert nets(transfers)[("merchant_payable:mer_a:USD", "posted", "USD")] == -600
    assert nets(transfers)[("refunds_paid:USD", "posted", "USD")] == -400
    assert state.refunded == 400
    with pytest.raises(PostingRefused, match="of 601 with 600 left"):
        STANDARD_RULES.transfers(
            ev(
                EventType.REFUNDED,
                "pay_1",
                Refunded(refund_id="re_2", amount=601, refunded_total=1001),
            ),
            state,
        )
    with pytest.raises(PostingRefused, match="already posted"):
        STANDARD_RULES.transfers(
            ev(
                EventType.REFUNDED,
                "pay_1",
                Refunded(refund_id="re_1", amount=1, refunded_total=401),
            ),
            state,
        )
    _, failed = run(
        [
            ev(EventType.INITIATED, "pay_2", INIT),
            ev(EventType.FAILED, "pay_2", Failed(reason="card_declined")),
        ]
    )
    with pytest.raises(PostingRefused, match="never posted"):
        STANDARD_RULES.transfers(
            ev(EventType.REFUNDED, "pay_2", Refunded(refund_id="r", amount=1, refunded_total=1)),
            failed,
        )


HOLD = ("authorization_holds:USD", "pending", "USD")
PAYABLE = "merchant_payable:mer_a:USD"


def held(payment: str = "pay_1") -> list[Any]:
    """A payment with manual capture, authorized: 1000 held on the card."""
    return [
        ev(EventType.AUTHORIZATION_REQUESTED, payment, INIT),
        ev(EventType.PROCESSING, payment, Processing()),
        ev(EventType.REQUIRES_CAPTURE, payment,
           RequiresCapture(authorization_id="auth_1", amount_capturable=1000)),
    ]  # fmt: skip


def test_an_authorization_is_a_hold_until_a_partial_capture_posts_part_and_releases_the_rest() -> (
    None
):
    transfers, state = run(held())
    assert [t.kind for t in transfers] == [Kind.AUTHORIZE]
    assert nets(transfers) == {HOLD: 1000, (PAYABLE, "pending", "USD"): -1000}
    capture = [
        ev(EventType.CAPTURE_REQUESTED, "pay_1", CaptureRequested(amount_to_capture=700)),
        ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch", amount_captured=700)),
    ]
    events = [*held(), *capture]
    transfers, state = run(events)
    assert [t.kind for t in transfers] == [Kind.AUTHORIZE, Kind.CAPTURE]
    assert all(balanced(t) for t in transfers)
    assert transfers[1].resolves == transaction_id(events[0].event_id, 0)
    assert nets(transfers) == {
        HOLD: 0,
        (PAYABLE, "pending", "USD"): 0,
        ("gateway_receivable:USD", "posted", "USD"): 700,
        (PAYABLE, "posted", "USD"): -700,
    }
    assert (state.resolution, state.posted) == (Kind.CAPTURE, 700)


def test_a_capture_takes_at_most_the_hold_and_refunds_at_most_the_capture() -> None:
    over = ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch", amount_captured=1001))
    _, state = run(held())
    with pytest.raises(PostingRefused, match="captured 1001 of a hold of 1000"):
        STANDARD_RULES.transfers(over, state)
    captured = ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch", amount_captured=600))
    _, state = run([*held(), captured])
    with pytest.raises(PostingRefused, match="of 601 with 600 left"):
        STANDARD_RULES.transfers(
            ev(
                EventType.REFUNDED, "pay_1", Refunded(refund_id="r", amount=601, refunded_total=601)
            ),
            state,
        )
    # A charge (automatic capture) is posted whole: a partial amount on one is refused.
    _, charging = run([ev(EventType.INITIATED, "pay_2", INIT)])
    with pytest.raises(PostingRefused, match="a charge of 1000 captured"):
        STANDARD_RULES.transfers(
            ev(EventType.SUCCEEDED, "pay_2", Succeeded(charge_id="c", amount_captured=10)),
            charging,
        )


@pytest.mark.parametrize("reason", list(CancellationReason))
def test_a_cancel_or_an_expiry_voids_the_hold_and_posts_nothing(
    reason: CancellationReason,
) -> None:
    canceled = ev(EventType.CANCELED, "pay_1", Canceled(cancellation_reason=reason))
    transfers, state = run([*held(), canceled])
    assert [t.kind for t in transfers] == [Kind.AUTHORIZE, Kind.VOID]
    assert set(nets(transfers).values()) == {0}
    assert HOLD in nets(transfers)
    assert (state.resolution, state.posted) == (Kind.VOID, 0)
    with pytest.raises(PostingRefused, match="already void"):
        STANDARD_RULES.transfers(
            ev(EventType.SUCCEEDED, "pay_1", Succeeded(charge_id="ch", amount_captured=5)), state
        )


def test_a_reversed_late_charge_is_two_transfers_through_suspense_netting_to_zero() -> None:
    events = [ev(EventType.INITIATED, "pay_1", INIT), ev(EventType.FAILED, "pay_1", Failed(reason="gateway_timeout")),
              ev(EventType.CHARGE_REVERSED, "pay_1", ChargeReversed(charge_id="ch_late", amount=1000))]  # fmt: skip
    transfers, state = run(events)
    assert [t.kind for t in transfers] == [
        Kind.AUTHORIZE,
        Kind.VOID,
        Kind.LATE_CHARGE,
        Kind.CHARGE_REVERSAL,
    ]
    assert all(balanced(t) for t in transfers)
    total = nets(transfers)
    assert total[("suspense:USD", "posted", "USD")] == 0
    # The gateway took 1000 and gave it back: what it owes us nets to zero.
    assert (
        total[("gateway_receivable:USD", "posted", "USD")]
        + total[("refunds_paid:USD", "posted", "USD")]
        == 0
    )
    with pytest.raises(PostingRefused, match="already recorded"):
        STANDARD_RULES.transfers(events[-1], state)


@pytest.mark.parametrize(
    "kind",
    [
        EventType.PROCESSING,
        EventType.REFUND_REQUESTED,
        EventType.REFUND_FAILED,
        EventType.REQUIRES_CAPTURE,
        EventType.CAPTURE_REQUESTED,
    ],
)
def test_other_events_post_nothing(kind: EventType) -> None:
    scenario = mixed(8)
    event = next(e for e in scenario.events if e.type is kind)
    assert STANDARD_RULES.transfers(event, PaymentState()) == []


def test_every_transfer_of_a_mixed_history_balances_per_currency_and_phase() -> None:
    states: dict[str, PaymentState] = {}
    for event in mixed(60).events:
        state = states.get(event.payment_id, PaymentState())
        for index, transfer in enumerate(STANDARD_RULES.transfers(event, state)):
            assert balanced(transfer), transfer
            assert all(line.amount > 0 for line in transfer.lines)
            state = state.after(transaction_id(event.event_id, index), transfer, event.merchant_id)
        states[event.payment_id] = state


def plan_in_batches(events: list[Any], size: int) -> list[Any]:
    items = [received(0, n, e) for n, e in enumerate(events)]
    planner = Planner(STANDARD_RULES)
    cursors = {("t.payments", 0): Cursor(0, 0, GENESIS)}
    states: dict[str, PaymentState] = {}
    chain: list[Any] = []
    for start in range(0, len(items), size):
        plan = planner.plan(
            items[start : start + size], cursors, states, set(), lambda _m, _e: True
        )
        cursors = plan.writes.cursors
        chain += [(c.record.id, c.record.seq, c.prev_hash, c.hash) for c in plan.writes.txns]
    return chain


def test_the_chain_does_not_depend_on_batch_boundaries() -> None:
    events = mixed(12).events
    one_by_one = plan_in_batches(events, 1)
    assert one_by_one == plan_in_batches(events, 7) == plan_in_batches(events, 1000)
    assert [seq for _, seq, _, _ in one_by_one] == list(range(1, len(one_by_one) + 1))
    assert all(prev == one_by_one[n - 1][3] for n, (_, _, prev, _) in enumerate(one_by_one) if n)


def test_a_bug_in_the_rules_is_retried_then_dead_lettered_by_the_verdicts() -> None:
    class Broken:
        def transfers(self, event: Any, state: PaymentState) -> list[Transfer]:
            raise ZeroDivisionError("a bug")

    item = received(0, 0, ev(EventType.INITIATED, "pay_1", INIT))
    calls: list[BaseException] = []

    def verdict(_message: Any, exc: BaseException) -> bool:
        calls.append(exc)
        return len(calls) >= 2

    planner = Planner(Broken())
    cursors = {("t.payments", 0): Cursor(0, 0, GENESIS)}
    with pytest.raises(NeedsRetry):
        planner.plan([item], cursors, {}, set(), verdict)
    plan = planner.plan([item], cursors, {}, set(), verdict)
    assert [d.error_type for d in plan.writes.dead_letters] == ["ZeroDivisionError"]
    assert plan.writes.cursors[("t.payments", 0)].next_offset == 1
    assert plan.writes.events == []


def test_the_hash_covers_every_entry() -> None:
    planner = Planner(STANDARD_RULES)
    item = received(0, 0, ev(EventType.INITIATED, "pay_1", INIT))
    plan = planner.plan(
        [item], {("t.payments", 0): Cursor(0, 0, GENESIS)}, {}, set(), lambda _m, _e: True
    )
    [chained] = plan.writes.txns
    assert digest(GENESIS, chained.record) == chained.hash
    record = chained.record
    tampered = record._replace(entries=(record.entries[0]._replace(amount=999), record.entries[1]))
    assert digest(GENESIS, tampered) != chained.hash


def test_the_hash_is_sha256_of_the_previous_one_and_the_documented_canonical_json() -> None:
    """Every stored hash depends on these bytes: whatever encoder digest() uses, they must stay
    json.dumps(body, separators=(",", ":"), ensure_ascii=False) in UTF-8."""
    awkward = "".join(chr(c) for c in range(0x800)) + "\u2028\u2029\ufeff\U0001f600\"'\\"
    prev = hashlib.sha256(b"previous").digest()
    for text, pending_of, number in [
        (awkward, uuid.uuid4(), 2**63 - 1),
        ("pay_1", None, 0),
        ("ré\x00f\n", uuid.UUID(int=0), 1),
    ]:
        record = TxnRecord(
            uuid.uuid4(), "refund", text, text[::-1], text, pending_of, uuid.uuid4(),
            "t.payments", number % 7, number, number + 1,
            (EntryRecord(2, text, "credit", "posted", number, "EUR"),
             EntryRecord(1, "refunds_paid:EUR", "debit", "posted", number, "EUR")),
        )  # fmt: skip
        body = [
            record.seq, str(record.id), record.kind, record.payment_id, record.merchant_id,
            record.reference, None if pending_of is None else str(pending_of),
            str(record.event_id), record.topic, record.partition, record.offset,
            [[1, "refunds_paid:EUR", "debit", "posted", number, "EUR"],
             [2, text, "credit", "posted", number, "EUR"]],
        ]  # fmt: skip
        canonical = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        assert digest(prev, record) == hashlib.sha256(prev + canonical).digest()


def test_transaction_ids_are_uuid5_of_the_event_id_and_index() -> None:
    namespace = uuid.UUID("6f1c2b7e-5d0a-4c55-9a43-4c1e0d6b8a11")
    for event_id in [uuid.uuid4() for _ in range(50)] + [uuid.UUID(int=0)]:
        for index in (0, 1, 12):
            expected = uuid.uuid5(namespace, f"{event_id}/{index}")
            assert transaction_id(event_id, index) == expected
            assert transaction_id(event_id, index).version == 5


@pytest.mark.parametrize(
    ("kind", "data", "columns"),
    [
        (EventType.INITIATED, INIT, (1000, "USD", None)),
        (EventType.PROCESSING, Processing(), (None, None, None)),
        (EventType.SUCCEEDED, Succeeded(charge_id="ch_1"), (None, None, "ch_1")),
        (EventType.FAILED, Failed(reason="card_declined"), (None, None, None)),
        (
            EventType.REFUND_REQUESTED,
            RefundRequested(refund_id="re_1", amount=5),
            (5, None, "re_1"),
        ),
        (
            EventType.REFUNDED,
            Refunded(refund_id="re_1", amount=5, refunded_total=5),
            (5, None, "re_1"),
        ),
        (
            EventType.REFUND_FAILED,
            RefundFailed(refund_id="re_1", reason="no"),
            (None, None, "re_1"),
        ),
        (EventType.CHARGE_REVERSED, ChargeReversed(charge_id="ch_1", amount=7), (7, None, "ch_1")),
        (
            EventType.PAYOUT_REQUESTED,
            PayoutRequested(amount=9, currency="USD"),
            (9, "USD", None),
        ),
        (
            EventType.PAYOUT_PAID,
            PayoutPaid(gateway_payout_id="po_g", amount=9),
            (9, None, "po_g"),
        ),
        (EventType.PAYOUT_FAILED, PayoutFailed(reason="payout_refused"), (None, None, None)),
    ],
)
def test_each_event_type_fills_its_events_row(kind: EventType, data: Any, columns: Any) -> None:
    event = ev(kind, "pay_1", data)
    row = _event_row(received(3, 9, event), event, "recorded")
    assert (row.amount, row.currency, row.reference) == columns
    assert row == (
        event.event_id, kind.value, "pay_1", "mer_a", *columns, "recorded", "t.payments", 3, 9,
    )  # fmt: skip


IN_TRANSIT = ("payouts_in_transit:USD", "pending", "USD")


def payout_requested(amount: int = 400) -> Any:
    return ev(EventType.PAYOUT_REQUESTED, "po_1", PayoutRequested(amount=amount, currency="USD"))


def test_a_payout_is_reserved_pending_then_posted_to_payouts_paid_once_paid() -> None:
    transfers, state = run([payout_requested()])
    assert [t.kind for t in transfers] == [Kind.AUTHORIZE]
    # Reserved: taken from what the merchant is owed, on its way out.
    assert nets(transfers) == {(PAYABLE, "pending", "USD"): 400, IN_TRANSIT: -400}
    events = [
        payout_requested(),
        ev(EventType.PAYOUT_PAID, "po_1", PayoutPaid(gateway_payout_id="g", amount=400)),
    ]
    transfers, state = run(events)
    assert [t.kind for t in transfers] == [Kind.AUTHORIZE, Kind.POST]
    assert all(balanced(t) for t in transfers)
    assert transfers[1].resolves == transaction_id(events[0].event_id, 0)
    assert nets(transfers) == {
        (PAYABLE, "pending", "USD"): 0,
        IN_TRANSIT: 0,
        (PAYABLE, "posted", "USD"): 400,
        ("payouts_paid:USD", "posted", "USD"): -400,
    }
    assert state.resolution is Kind.POST
    with pytest.raises(PostingRefused, match="already post"):
        STANDARD_RULES.transfers(
            ev(EventType.PAYOUT_FAILED, "po_1", PayoutFailed(reason="gateway_error")), state
        )


def test_a_failed_payout_voids_its_reservation_and_posts_nothing() -> None:
    failed = ev(EventType.PAYOUT_FAILED, "po_1", PayoutFailed(reason="payout_refused"))
    transfers, state = run([payout_requested(), failed])
    assert [t.kind for t in transfers] == [Kind.AUTHORIZE, Kind.VOID]
    assert set(nets(transfers).values()) == {0}
    assert IN_TRANSIT in nets(transfers)
    assert (state.resolution, state.posted) == (Kind.VOID, 0)


def test_a_payout_is_paid_exactly_its_reservation_and_never_as_a_payment() -> None:
    _, state = run([payout_requested()])
    with pytest.raises(PostingRefused, match="of 400 paid 401"):
        STANDARD_RULES.transfers(
            ev(EventType.PAYOUT_PAID, "po_1", PayoutPaid(gateway_payout_id="g", amount=401)), state
        )
    with pytest.raises(PostingRefused, match="whose pending transfer is not"):
        STANDARD_RULES.transfers(ev(EventType.SUCCEEDED, "po_1", Succeeded(charge_id="c")), state)
    _, paying = run([ev(EventType.INITIATED, "pay_1", INIT)])
    with pytest.raises(PostingRefused, match="whose pending transfer is not"):
        STANDARD_RULES.transfers(
            ev(EventType.PAYOUT_FAILED, "pay_1", PayoutFailed(reason="gateway_error")), paying
        )
    with pytest.raises(PostingRefused, match="already has a pending transfer"):
        STANDARD_RULES.transfers(payout_requested(), state)
