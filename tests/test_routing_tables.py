"""Every consumer decides about every event type: its routing table names each one.

The tables are found where they register (``workers.core.consuming.register``) once every
module of ``workers`` is imported, so a consumer added later is walked too.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Any

import pytest

import workers
from workers.core.commands import CommandType
from workers.core.consuming import IGNORE, registered
from workers.core.events import (
    PAYLOADS,
    Canceled,
    CancelRequested,
    CaptureRequested,
    ChargeReversed,
    EventType,
    Failed,
    GatewayReported,
    Initiated,
    NextAction,
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
    new_event,
)
from workers.ledger import posting
from workers.ledger.rules import STANDARD_RULES, PaymentState, PostingRefused

# Alembic's scripts run inside Alembic only: importing them elsewhere fails.
NOT_IMPORTABLE = ("workers.migrations.",)


def _every_table() -> dict[str, Any]:
    for module in pkgutil.walk_packages(workers.__path__, "workers."):
        if not module.name.startswith(NOT_IMPORTABLE):
            importlib.import_module(module.name)
    return registered()


EVERY_TABLE = _every_table()
# The event consumers' tables (payment and endpoint events); the command tables are walked apart.
TABLES = {name: t for name, t in EVERY_TABLE.items() if t.kinds is not CommandType}
COMMAND_TABLES = {name: t for name, t in EVERY_TABLE.items() if t.kinds is CommandType}


@pytest.mark.parametrize("name", sorted(COMMAND_TABLES))
@pytest.mark.parametrize("command_type", list(CommandType))
def test_every_command_type_has_a_decision_in_every_command_table(
    name: str, command_type: CommandType
) -> None:
    assert command_type in COMMAND_TABLES[name].table


def test_the_processor_executes_every_command() -> None:
    table = COMMAND_TABLES["processor-commands"].table
    assert all(route is not IGNORE for route in table.values())
    assert set(table) == set(CommandType)


def test_the_processor_starts_no_work_from_the_events_the_orchestrator_acts_on() -> None:
    """The sagas decide: a payment is charged, a refund sent, only on the orchestrator's
    command, never on the event that asked for it."""
    table = TABLES["processor"]
    for kind in (EventType.INITIATED, EventType.REFUND_REQUESTED,
                 EventType.AUTHORIZATION_REQUESTED, EventType.PAYOUT_REQUESTED):  # fmt: skip
        assert table.route(kind) is IGNORE


def test_the_consumers_tables_are_registered() -> None:
    # The processor and the notifier join when they move onto the engine.
    assert {"api-read-model", "ledger"} <= set(TABLES)


@pytest.mark.parametrize(
    ("name", "event_type"),
    [(name, kind) for name in sorted(TABLES) for kind in TABLES[name].kinds],
)
def test_every_event_type_has_a_decision_in_every_table(name: str, event_type: Any) -> None:
    route = TABLES[name].route(event_type)
    assert route is IGNORE or callable(route)


# A valid payload of each type: a type added later needs one here, and a rule in the ledger.
EXAMPLES = {
    EventType.INITIATED: Initiated(amount=100, currency="USD", payment_method="pm_card_visa"),
    EventType.AUTHORIZATION_REQUESTED: Initiated(
        amount=100, currency="USD", payment_method="pm_card_visa"
    ),
    EventType.REQUIRES_CAPTURE: RequiresCapture(authorization_id="auth_1", amount_capturable=100),
    EventType.CAPTURE_REQUESTED: CaptureRequested(amount_to_capture=60),
    EventType.CANCEL_REQUESTED: CancelRequested(cancellation_reason="requested_by_customer"),
    EventType.CANCELED: Canceled(cancellation_reason="expired"),
    EventType.PROCESSING: Processing(),
    EventType.REQUIRES_ACTION: RequiresAction(
        charge_id="pi_1", next_action=NextAction(type="use_stripe_sdk")
    ),
    EventType.SUCCEEDED: Succeeded(charge_id="ch_1"),
    EventType.FAILED: Failed(reason="card_declined"),
    EventType.REFUND_REQUESTED: RefundRequested(refund_id="re_1", amount=10),
    EventType.REFUNDED: Refunded(refund_id="re_1", amount=10, refunded_total=10),
    EventType.REFUND_FAILED: RefundFailed(refund_id="re_1", reason="no"),
    EventType.CHARGE_REVERSED: ChargeReversed(charge_id="ch_1", amount=100),
    EventType.GATEWAY_REPORTED: GatewayReported(
        provider="stripe",
        gateway_event_id="evt_1",
        gateway_event_type="payment_intent.succeeded",
        object_id="pi_1",
        status="succeeded",
        amount=100,
        currency="USD",
        livemode=False,
    ),
    EventType.PAYOUT_REQUESTED: PayoutRequested(amount=100, currency="USD"),
    EventType.PAYOUT_PAID: PayoutPaid(gateway_payout_id="po_g", amount=100),
    EventType.PAYOUT_FAILED: PayoutFailed(reason="payout_refused"),
}


def test_every_event_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(EventType)


@pytest.mark.parametrize("event_type", list(EventType))
def test_the_posting_rules_decide_about_every_event_type(event_type: EventType) -> None:
    # The ledger routes every type to its rules; they have a case for each (an unknown type
    # fails an assertion, never falls through to "post nothing").
    data = EXAMPLES[event_type]
    event = new_event(event_type, payment_id="pay_1", merchant_id="mer_1", data=data, source="t")
    # Refused is a decision too: a payment with nothing posted cannot take some.
    with contextlib.suppress(PostingRefused):
        STANDARD_RULES.transfers(event, PaymentState())


def test_the_ledger_says_what_each_payload_records() -> None:
    assert set(posting._ROW_FIELDS) == set(PAYLOADS.values())


def test_the_processor_settles_by_the_gateways_reports() -> None:
    assert TABLES["processor"].route(EventType.GATEWAY_REPORTED) is not IGNORE
    # Webhooks tell merchants that a payment waits for its customer.
    assert TABLES["notifier"].route(EventType.REQUIRES_ACTION) is not IGNORE
