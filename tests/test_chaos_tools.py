"""The chaos scenario's own tools, without a stack: secrets scan, fault schedule, invariants."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from chaos.eventlog import Logged
from chaos.evidence import Evidence, JournalEntry
from chaos.faults import FAILOVERS, KINDS, schedule
from chaos.invariants import (
    CHECKS,
    acknowledged_kept,
    authorizations_ended,
    check_all,
    every_event_accounted,
    ledger_agrees,
    one_charge_each,
    one_payment_per_key,
    sagas_finished,
    webhooks_delivered,
)
from chaos.load import Sent
from chaos.money_checks import (
    REFUSED,
    balances_never_negative,
    holds_within_bounds,
    payouts_once,
)
from chaos.receiver import Receipt
from chaos.scenario import Config, fault_kinds
from chaos.secrets import leaks
from workers.core.events import (
    Event,
    EventType,
    Initiated,
    PayoutFailed,
    PayoutPaid,
    PayoutRequested,
    Refunded,
    RefundRequested,
    Succeeded,
    new_event,
)
from workers.core.projection import iso


def test_the_secrets_scan_finds_each_secret_whole_or_as_its_key_part(tmp_path: Path) -> None:
    log = tmp_path / "role.log"
    log.write_text('{"message": "signing with c2VjcmV0LWJ5dGVz"}\n{"message": "ok"}\n')
    secrets = {"webhook secret": "whsec_c2VjcmV0LWJ5dGVz", "API key": "fp_live_abc123"}

    found = leaks(secrets, {"flowpay status": "key fp_live_abc123 twice fp_live_abc123"}, [log])

    assert sorted(found) == [
        "API key appears 2 times in flowpay status",
        f"webhook secret (key part) appears 1 times in {log}",
    ]
    assert leaks(secrets, {"flowpay dev status": "postgresql://flowpay:***@host"}, [log]) == [
        f"webhook secret (key part) appears 1 times in {log}"
    ]


def test_the_schedule_has_every_kind_each_round_in_a_seeded_order() -> None:
    three = schedule(KINDS, 3, seed=5)

    assert three == schedule(KINDS, 3, seed=5)
    assert three != schedule(KINDS, 3, seed=6)
    for round_ in range(3):
        assert sorted(three[round_ * len(KINDS) : (round_ + 1) * len(KINDS)]) == sorted(KINDS)


STARTED = new_event(
    EventType.INITIATED,
    payment_id="pay_1",
    merchant_id="mer_1",
    data=Initiated(amount=500, currency="USD", payment_method="pm_card_visa"),
    source="test",
)
PAID = new_event(
    EventType.SUCCEEDED,
    payment_id="pay_1",
    merchant_id="mer_1",
    data=Succeeded(charge_id="ch_1"),
    source="test",
)


def _balance(available: int, pending: int = 0) -> dict[str, Any]:
    """``GET /v1/balance`` of a merchant with this much in USD."""
    return {
        "available": [{"amount": available, "currency": "USD"}],
        "pending": [{"amount": pending, "currency": "USD"}],
    }


def _entry(
    event: Event, direction: str, phase: str, amount: int, *, payout: bool = False
) -> JournalEntry:
    return JournalEntry(event.merchant_id, "USD", event.event_id, direction, phase, amount, payout)


def _evidence(**changes: Any) -> Evidence:
    """Evidence of a quiet, correct run of one payment, with ``changes`` applied."""
    receipt = Receipt(
        "mer_1",
        "msg_1",
        {"type": "payment.succeeded", "timestamp": iso(PAID.occurred_at), "data": {"id": "pay_1"}},
        signature_ok=True,
        answered=200,
    )
    fields: dict[str, Any] = {
        "payments": [
            {
                "id": "pay_1",
                "merchant_id": "mer_1",
                "status": "succeeded",
                "amount": 500,
                "refunded_amount": 0,
                "metadata": {"chaos_key": "pay-1"},
            }
        ],
        "refunds": [],
        "stuck_refunds": [],
        "leftovers": [],
        "charges": [
            {
                "id": "ch_1",
                "reference": "pay_1",
                "status": "succeeded",
                "amount": 500,
                "amount_refunded": 0,
            }
        ],
        "log": [Logged(0, 0, STARTED, b""), Logged(0, 1, PAID, b"")],
        "dead_letter_topic": [],
        "receipts": [receipt],
        "failed_deliveries": [],
        "ledger_check": {"ok": True, "checks": []},
        "balances": [
            {
                "account": "merchant_payable:mer_1:USD",
                "code": "merchant_payable",
                "merchant_id": "mer_1",
                "pending": 0,
                "posted": 500,
            },
            {
                "account": "gateway_receivable:USD",
                "code": "gateway_receivable",
                "merchant_id": None,
                "pending": 0,
                "posted": 500,
            },
        ],
        "ledger_dead_letters": [],
        # The API's read model has nothing to apply for payment.initiated: the intake stored it.
        "recorded": {
            "api": {STARTED.event_id, PAID.event_id},
            "ledger": {STARTED.event_id, PAID.event_id},
        },
        "lag": {"api": 0, "ledger": 0},
        "merchants": ["mer_1"],
        "sent": [Sent("pay-1", "mer_1", {}, {"pay_1"}, "accepted")],
        "acknowledged": {STARTED.event_id, PAID.event_id},
        "api_balances": {"mer_1": _balance(500)},
        # The payment's pending credit, then its release and its posting.
        "journal": [
            _entry(STARTED, "credit", "pending", 500),
            _entry(PAID, "debit", "pending", 500),
            _entry(PAID, "credit", "posted", 500),
        ],
        "authorization_ttl_s": 20.0,
        "release_grace_s": 90.0,
    }
    return Evidence(**(fields | changes))


def test_a_correct_run_breaks_no_invariant() -> None:
    assert check_all(_evidence()) == {name: [] for name in CHECKS}


def test_each_invariant_names_what_breaks_it() -> None:
    good = _evidence()
    twice = [*good.charges, good.charges[0] | {"id": "ch_2"}]
    failed = [good.payments[0] | {"status": "failed"}]
    same_key = [*good.payments, good.payments[0] | {"id": "pay_2"}]
    resent = [*good.receipts, replace(good.receipts[0], webhook_id="msg_2")]

    assert one_charge_each(_evidence(charges=twice)) == [
        "payment pay_1 was charged 2 times: ch_1, ch_2"
    ]
    assert ledger_agrees(_evidence(charges=twice)) == [
        "the ledger says the gateway owes 500, the gateway's charges hold 1000"
    ]
    assert "not reversed" in one_charge_each(_evidence(payments=failed))[0]
    assert ledger_agrees(_evidence(payments=failed))[0].startswith("merchant mer_1: ledger posted")
    assert webhooks_delivered(_evidence(receipts=[]))[0].endswith("never reached the receiver")
    assert "webhook-ids" in webhooks_delivered(_evidence(receipts=resent))[0]
    assert "made 2 payments" in one_payment_per_key(_evidence(payments=same_key))[-1]
    assert every_event_accounted(_evidence(lag={"ledger": 3})) == [
        "consumer group ledger is 3 messages behind the log"
    ]
    assert "never applied 2 events" in every_event_accounted(_evidence(recorded={"api": set()}))[0]


def test_a_lost_202_or_acknowledged_event_is_named() -> None:
    lost = Sent("pay-2", "mer_1", {}, {"pay_2"}, "accepted")
    good = _evidence()

    assert acknowledged_kept(_evidence(sent=[*good.sent, lost])) == [
        "payment pay_2 (pay-2) was answered 202 and is missing from the API's list"
    ]
    only_started = [m for m in good.log if m.event is STARTED]
    assert acknowledged_kept(_evidence(log=only_started)) == [
        f"1 events Kafka acknowledged are not in the log (e.g. {PAID.event_id})"
    ]


def test_events_the_read_model_ignores_are_not_missing_from_it() -> None:
    good = _evidence()
    # The orchestrator's request to the gateway: no event of the merchant's.
    asked = new_event(
        EventType.AUTHORIZATION_REQUESTED, payment_id="pay_1", merchant_id="mer_1",
        source="test", data=Initiated(amount=100, currency="EUR", payment_method="pm_card_visa"),
    )  # fmt: skip
    log = [*good.log, Logged(0, 2, asked, b"")]
    recorded = {"api": good.recorded["api"], "ledger": good.recorded["ledger"] | {asked.event_id}}
    assert every_event_accounted(_evidence(log=log, recorded=recorded)) == []
    # The ledger applies every type: one missing there is still missing.
    missing = {"api": good.recorded["api"], "ledger": good.recorded["ledger"]}
    assert (
        "ledger never applied 1" in every_event_accounted(_evidence(log=log, recorded=missing))[0]
    )


def test_events_a_groups_routing_table_passes_over_are_not_missing_from_it() -> None:
    """The notifier passes over a refund request (no webhook); it does not record it."""
    good = _evidence()
    asked = new_event(
        EventType.REFUND_REQUESTED, payment_id="pay_1", merchant_id="mer_1", source="test",
        data=RefundRequested(refund_id="re_1", amount=100),
    )  # fmt: skip
    log = [*good.log, Logged(0, 2, asked, b"")]
    seen = {"ledger": good.recorded["ledger"] | {asked.event_id}, "notifier": set()}
    notified = {
        e.event_id for e in good.events().values() if e.type is not EventType.REFUND_REQUESTED
    }
    assert every_event_accounted(_evidence(log=log, recorded={**seen, "notifier": notified})) == []
    # A type it acts on, missing, is still missing.
    assert "notifier never applied" in every_event_accounted(_evidence(log=log, recorded=seen))[0]


def test_a_cluster_adds_its_failovers_and_only_narrows_the_kinds() -> None:
    assert not set(FAILOVERS) & set(fault_kinds(Config()))
    on_cluster = fault_kinds(Config(brokers=3, pg_standby=True))
    assert on_cluster == (*KINDS, *FAILOVERS)
    assert fault_kinds(Config(brokers=3, only=FAILOVERS)) == (FAILOVERS[0],)


def _authorization(**changes: Any) -> dict[str, Any]:
    held = {"id": "au_1", "reference": "pay_1", "status": "captured", "amount": 800}
    return held | {"amount_capturable": 0, "amount_captured": 500} | changes


def test_a_partially_captured_authorization_agrees_with_its_payment() -> None:
    partial = [_evidence().payments[0] | {"amount": 800, "amount_received": 500}]
    captured = Sent("partial-pay_1", "mer_1", {"id": "pay_1"}, {"pay_1"}, "accepted")
    good = _evidence(payments=partial, authorizations=[_authorization()], actions=[captured])

    assert check_all(good) == {name: [] for name in CHECKS}


def test_an_authorization_left_open_or_captured_wrongly_is_named() -> None:
    partial = [_evidence().payments[0] | {"amount": 800, "amount_received": 500}]
    open_ = _authorization(status="requires_capture", amount_capturable=800, amount_captured=0)
    twice = [_authorization(), _authorization(id="au_2")]
    more = [_authorization(amount_captured=800)]

    assert authorizations_ended(_evidence(payments=partial, authorizations=[open_])) == [
        "authorization au_1 of succeeded payment pay_1 still holds 800"
    ]
    assert authorizations_ended(_evidence(payments=partial, authorizations=twice)) == [
        "succeeded payment pay_1 was captured by au_1, au_2"
    ]
    assert authorizations_ended(_evidence(payments=partial, authorizations=more)) == [
        "payment pay_1 reports 500 received, its authorization captured 800"
    ]


def test_a_refused_capture_is_named_unless_the_authorization_had_expired() -> None:
    refused = Sent(
        "capture-pay_1", "mer_1", {"id": "pay_1"}, set(), "rejected:409:payment_invalid_state"
    )
    canceled = _evidence().payments[0] | {"status": "canceled", "amount_received": 0}

    assert authorizations_ended(_evidence(payments=[canceled], actions=[refused])) == [
        "capture-pay_1 got rejected:409:payment_invalid_state; the payment is canceled"
    ]
    expired = [canceled | {"cancellation_reason": "expired"}]
    assert authorizations_ended(_evidence(payments=expired, actions=[refused])) == []


def test_a_saga_neither_ended_nor_timed_is_named() -> None:
    assert sagas_finished(_evidence(unfinished_sagas=["sag_1 payment running charge"])) == [
        "saga sag_1 payment running charge is neither ended nor waiting on a timer"
    ]


def _payout_event(type_: EventType, data: Any, payout_id: str = "po_1") -> Event:
    return new_event(type_, payment_id=payout_id, merchant_id="mer_1", data=data, source="test")


# After pay_1 (500) succeeded: po_1 of 300 reserved and paid, po_2 of 100 reserved and failed.
ASKED = _payout_event(EventType.PAYOUT_REQUESTED, PayoutRequested(amount=300, currency="USD"))
SENT = _payout_event(EventType.PAYOUT_PAID, PayoutPaid(gateway_payout_id="gpo_1", amount=300))
ASKED_2 = _payout_event(
    EventType.PAYOUT_REQUESTED, PayoutRequested(amount=100, currency="USD"), "po_2"
)
BOUNCED = _payout_event(EventType.PAYOUT_FAILED, PayoutFailed(reason="payout_refused"), "po_2")


def _with_payouts(**changes: Any) -> Evidence:
    """The correct run of one payment, then a payout paid and one failed."""
    good = _evidence()
    payouts = [
        {"id": "po_1", "merchant_id": "mer_1", "amount": 300, "currency": "USD", "status": "paid"},
        {
            "id": "po_2",
            "merchant_id": "mer_1",
            "amount": 100,
            "currency": "USD",
            "status": "failed",
        },
    ]
    gateway = [
        {"id": "gpo_1", "reference": "po_1", "status": "paid", "amount": 300},
        {"id": "gpo_2", "reference": "po_2", "status": "failed", "amount": 100},
    ]
    journal = [
        *good.journal,
        _entry(ASKED, "debit", "pending", 300, payout=True),
        _entry(SENT, "credit", "pending", 300, payout=True),
        _entry(SENT, "debit", "posted", 300),
        _entry(ASKED_2, "debit", "pending", 100, payout=True),
        _entry(BOUNCED, "credit", "pending", 100, payout=True),
    ]
    balances = [
        good.balances[0] | {"posted": 200},
        good.balances[1],
        {"account": "payouts_paid:USD", "code": "payouts_paid", "merchant_id": None,
         "currency": "USD", "pending": 0, "posted": 300},
    ]  # fmt: skip
    requests = [
        Sent("payout-0", "mer_1", {"amount": 300}, {"po_1"}, "accepted"),
        Sent("payout-1", "mer_1", {"amount": 100}, {"po_2"}, "accepted"),
    ]
    overdraft = Sent("payout-2", "mer_1", {"amount": 10**12}, set(), REFUSED)
    log = [
        *good.log,
        *(Logged(1, n, e, b"") for n, e in enumerate((ASKED, SENT, ASKED_2, BOUNCED))),
    ]
    fields: dict[str, Any] = {
        "payouts": payouts,
        "gateway_payouts": gateway,
        "journal": journal,
        "balances": balances,
        "api_balances": {"mer_1": _balance(200)},
        "payout_requests": requests,
        "overdrafts": [overdraft],
        "log": log,
    }
    return _evidence(**(fields | changes))


def test_payouts_paid_and_failed_as_the_gateway_did_break_no_invariant() -> None:
    good = _with_payouts()

    for check in (ledger_agrees, balances_never_negative, payouts_once, holds_within_bounds):
        assert check(good) == [], check.__name__


def test_a_balance_below_zero_anywhere_in_the_journal_is_named() -> None:
    good = _with_payouts()
    # A refund of 250 after the payout of 300 took the balance, at that point, to -50; more
    # payments afterwards bring it back.
    back = new_event(EventType.REFUNDED, payment_id="pay_1", merchant_id="mer_1", source="test",
                     data=Refunded(refund_id="re_1", amount=250, refunded_total=250))  # fmt: skip
    later = new_event(EventType.SUCCEEDED, payment_id="pay_2", merchant_id="mer_1", source="test",
                      data=Succeeded(charge_id="ch_2"))  # fmt: skip
    journal = [
        *good.journal,
        _entry(back, "debit", "posted", 250),
        _entry(later, "credit", "posted", 250),
    ]
    log = [*good.log, Logged(0, 2, back, b""), Logged(0, 3, later, b"")]

    found = balances_never_negative(_with_payouts(journal=journal, log=log))

    assert found == [
        f"merchant mer_1 USD: the balance went to -50 with payment.refunded of pay_1 at "
        f"{back.occurred_at.isoformat()}"
    ]
    short = [good.balances[0] | {"posted": -5}, *good.balances[1:]]
    assert "merchant_payable:mer_1:USD ends at -5 posted" in balances_never_negative(
        _with_payouts(balances=short)
    )


def test_an_api_balance_unlike_the_ledgers_is_named() -> None:
    assert balances_never_negative(_with_payouts(api_balances={"mer_1": _balance(300, 40)})) == [
        "merchant mer_1 USD: the API's balance is available 300, pending 40; the ledger's 200, 0"
    ]
    # A failed payout's amount never given back to available.
    assert payouts_once(_with_payouts(api_balances={"mer_1": _balance(100)})) == [
        "merchant mer_1: the API's balance is 100 available, its payments less refunds and "
        "payouts not failed make 200"
    ]


def test_a_payout_paid_twice_or_unlike_the_gateway_is_named() -> None:
    good = _with_payouts()
    twice = [*good.gateway_payouts, good.gateway_payouts[0] | {"id": "gpo_3"}]
    assert payouts_once(_with_payouts(gateway_payouts=twice)) == [
        "payout po_1 was paid 2 times: gpo_1, gpo_3"
    ]
    paid_failed = [good.gateway_payouts[0], good.gateway_payouts[1] | {"status": "paid"}]
    assert payouts_once(_with_payouts(gateway_payouts=paid_failed)) == [
        "payout po_2 is failed but the gateway paid gpo_2"
    ]
    pending = [good.payouts[0], good.payouts[1] | {"status": "pending"}]
    assert "payout po_2 is stuck in pending" in payouts_once(_with_payouts(payouts=pending))
    house = [*good.balances[:2], good.balances[2] | {"posted": 600}]
    assert payouts_once(_with_payouts(balances=house)) == [
        "payouts_paid:USD is 600, the payouts paid make 300"
    ]


def test_an_overdraft_taken_or_a_payout_202_lost_is_named() -> None:
    taken = Sent("payout-2", "mer_1", {"amount": 10**12}, {"po_9"}, "accepted")
    lost = Sent("payout-3", "mer_1", {"amount": 5}, {"po_8"}, "accepted")
    unanswered = Sent("payout-4", "mer_1", {"amount": 5}, set(), "rejected:400:parameter_invalid")
    good = _with_payouts()

    found = payouts_once(
        _with_payouts(overdrafts=[taken], payout_requests=[*good.payout_requests, lost, unanswered])
    )

    assert found == [
        "payout request payout-4 never got a definite answer: rejected:400:parameter_invalid",
        "payout po_8 (payout-3) was answered 202 and is missing from the API's list",
        "payout request payout-2 of 1000000000000, more than could ever be available, got accepted",
    ]
    # A part of the balance refused while another payout of the merchant's held it is an answer.
    refused = Sent("payout-5", "mer_1", {"amount": 5}, set(), REFUSED)
    assert payouts_once(_with_payouts(payout_requests=[*good.payout_requests, refused])) == []


def test_a_hold_captured_above_itself_or_released_outside_its_ttl_is_named() -> None:
    expired = _evidence().payments[0] | {"status": "canceled", "cancellation_reason": "expired"}
    made = "2026-01-01T00:00:00.000000Z"

    def hold(ended: str, **changes: Any) -> dict[str, Any]:
        return _authorization(**({"created_at": made, "ended_at": ended, "amount": 500} | changes))

    early = hold("2026-01-01T00:00:05.000000Z", status="canceled", amount_captured=0)
    late = hold("2026-01-01T00:02:00.000000Z", status="canceled", amount_captured=0)
    on_time = hold("2026-01-01T00:00:21.500000Z", status="canceled", amount_captured=0)
    more = hold("2026-01-01T00:00:01.000000Z", amount_captured=501)

    assert holds_within_bounds(_evidence(payments=[expired], authorizations=[on_time])) == []
    assert holds_within_bounds(_evidence(payments=[expired], authorizations=[early])) == [
        "authorization au_1 expired after 5.0 s, before its TTL of 20 s"
    ]
    assert holds_within_bounds(_evidence(payments=[expired], authorizations=[late])) == [
        "authorization au_1 was held 120.0 s, past its TTL of 20 s"
    ]
    assert holds_within_bounds(_evidence(authorizations=[more])) == [
        "authorization au_1 captured 501 of 500"
    ]
    other = hold("2026-01-01T00:00:01.000000Z", amount=800)
    assert holds_within_bounds(_evidence(authorizations=[other])) == [
        "authorization au_1 holds 800, payment pay_1 asked for 500"
    ]
