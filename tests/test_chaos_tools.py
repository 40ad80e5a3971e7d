"""The chaos scenario's own tools, without a stack: secrets scan, fault schedule, invariants."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from chaos.eventlog import Logged
from chaos.faults import FAILOVERS, KINDS, schedule
from chaos.invariants import (
    CHECKS,
    Evidence,
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
from chaos.receiver import Receipt
from chaos.scenario import Config, fault_kinds
from chaos.secrets import leaks
from workers.core.events import EventType, Initiated, RefundRequested, Succeeded, new_event
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
