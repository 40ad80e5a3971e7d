"""The things that must hold once the system has settled; each check names every violation.

Each check reads the evidence gathered once (``chaos.evidence``); those of balances, payouts and
holds are in ``chaos.money_checks``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from chaos.evidence import Evidence, Violations, paid_out, received
from chaos.money_checks import balances_never_negative, holds_within_bounds, payouts_once
from chaos.receiver import Receipt
from chaos.settle import unreversed
from workers.api.client import TERMINAL
from workers.api.read_model import ROUTES as READ_MODEL
from workers.core.consuming import IGNORE, Routes
from workers.core.events import Event, EventType
from workers.core.projection import iso
from workers.core.topics import GROUP_API, GROUP_LEDGER, GROUP_NOTIFIER
from workers.ledger.consumer import ROUTES as LEDGER
from workers.notifier.intake import NOTIFIED
from workers.notifier.worker import ROUTES as NOTIFIER

ROUTES_OF: dict[str, Routes[Any]] = {
    GROUP_API: READ_MODEL,
    GROUP_LEDGER: LEDGER,
    GROUP_NOTIFIER: NOTIFIER,
}


def all_terminal(ev: Evidence) -> Violations:
    found = [f"did not settle: {what}" for what in ev.leftovers]
    for p in ev.payments:
        if p["status"] not in TERMINAL:
            found.append(f"payment {p['id']} is stuck in {p['status']}")
    for sent in ev.sent:
        if not sent.accepted:
            found.append(f"payment request {sent.key} never got a definite answer: {sent.outcome}")
    found.extend(f"refund {r} is stuck in requested" for r in ev.stuck_refunds)
    found.extend(
        f"refund request {r.key} never got a definite answer: {r.outcome}"
        for r in ev.refunds
        if not r.accepted
    )
    return found


def one_charge_each(ev: Evidence) -> Violations:
    found = []
    by_payment = {p["id"]: p for p in ev.payments}
    charged: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for charge in ev.charges:
        if charge["status"] == "succeeded":
            charged[charge["reference"]].append(charge)
    for reference, charges in charged.items():
        if len(charges) > 1:
            ids = ", ".join(c["id"] for c in charges)
            found.append(f"payment {reference} was charged {len(charges)} times: {ids}")
        if reference not in by_payment:
            found.append(f"charge {charges[0]['id']} is for {reference}, which no merchant has")
    failed = {pid for pid, p in by_payment.items() if p["status"] == "failed"}
    found.extend(
        f"payment {c['reference']} is failed but charge {c['id']} holds "
        f"{c['amount'] - c['amount_refunded']} (not reversed)"
        for c in unreversed(ev.charges, failed)
    )
    for pid, payment in by_payment.items():
        if payment["status"] not in ("succeeded", "refunded"):
            continue
        charges = charged.get(pid, [])
        if not charges:
            found.append(f"payment {pid} is {payment['status']} but the gateway has no charge")
        elif charges[0]["amount_refunded"] != payment["refunded_amount"]:
            found.append(
                f"payment {pid} reports {payment['refunded_amount']} refunded, the gateway "
                f"{charges[0]['amount_refunded']}"
            )
    return found


def ledger_agrees(ev: Evidence) -> Violations:
    found = [
        f"ledger check {c['name']}: {problem}"
        for c in ev.ledger_check.get("checks", [])
        for problem in c.get("violations", [])
    ]
    if not ev.ledger_check.get("ok"):
        found.append("flowpay ledger check did not pass")
    expected: dict[str, int] = dict.fromkeys(ev.merchants, 0)
    for p in ev.payments:
        if p["status"] in ("succeeded", "refunded"):
            expected[p["merchant_id"]] += received(p) - int(p["refunded_amount"])
    for merchant, amount in paid_out(ev.payouts).items():
        expected[merchant] = expected.get(merchant, 0) - amount
    posted = {
        b["merchant_id"]: int(b["posted"]) for b in ev.balances if b["code"] == "merchant_payable"
    }
    for merchant, amount in expected.items():
        if posted.get(merchant, 0) != amount:
            found.append(
                f"merchant {merchant}: ledger posted {posted.get(merchant, 0)}, the API's "
                f"succeeded payments minus refunds and payouts paid make {amount}"
            )
    found.extend(
        f"{b['account']} still has {b['pending']} pending" for b in ev.balances if b["pending"]
    )
    house = {b["code"]: int(b["posted"]) for b in ev.balances if b["merchant_id"] is None}
    owed = house.get("gateway_receivable", 0) - house.get("refunds_paid", 0)
    held = sum(c["amount"] - c["amount_refunded"] for c in ev.charges if c["status"] == "succeeded")
    if owed != held:
        found.append(f"the ledger says the gateway owes {owed}, the gateway's charges hold {held}")
    return found


def _webhook_key(merchant_id: str, payment_id: str, type_: str, at: str) -> tuple[str, ...]:
    return (merchant_id, payment_id, type_, at)


def webhooks_delivered(ev: Evidence) -> Violations:
    found = [
        f"webhook with a bad signature for {r.merchant_id}"
        for r in ev.receipts
        if not r.signature_ok
    ]
    got: dict[tuple[str, ...], list[Receipt]] = defaultdict(list)
    events_of_id: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for r in ev.receipts:
        if r.signature_ok:
            key = _webhook_key(
                r.merchant_id, r.body["data"]["id"], r.body["type"], r.body["timestamp"]
            )
            got[key].append(r)
            events_of_id[r.webhook_id].add(key)
    for event in ev.events().values():
        if event.type not in NOTIFIED:
            continue
        key = _webhook_key(
            event.merchant_id, event.payment_id, event.type.value, iso(event.occurred_at)
        )
        receipts = got.get(key, [])
        if not any(r.answered == 200 for r in receipts):
            found.append(f"{event.type.value} of {event.payment_id} never reached the receiver")
        ids = {r.webhook_id for r in receipts}
        if len(ids) > 1:
            found.append(f"{event.type.value} of {event.payment_id} came with webhook-ids {ids}")
    found.extend(
        f"webhook-id {wid} was used for {len(keys)} different events"
        for wid, keys in events_of_id.items()
        if len(keys) > 1
    )
    found.extend(f"delivery gave up: {d}" for d in ev.failed_deliveries)
    return found


def one_payment_per_key(ev: Evidence) -> Violations:
    found = []
    by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in ev.payments:
        key = p.get("metadata", {}).get("chaos_key")
        if key is None:
            found.append(f"payment {p['id']} was made by no request of the load")
        by_key[(p["merchant_id"], str(key))].append(p["id"])
    found.extend(
        f"idempotency key {key} made {len(ids)} payments: {', '.join(ids)}"
        for (_merchant, key), ids in by_key.items()
        if len(ids) > 1
    )
    found.extend(
        f"idempotency key {s.key} was answered with {len(s.ids)} different payments"
        for s in [*ev.sent, *ev.refunds]
        if len(s.ids) > 1
    )
    return found


def _passed_over(group: str, events: dict[uuid.UUID, Event], listed: set[str]) -> set[uuid.UUID]:
    """Events ``group``'s routing table ignores: having passed them (no lag) is all it does
    with them. The API stores a payment in the transaction that emits its payment.initiated:
    the payment being listed accounts for that event too."""
    routes = ROUTES_OF[group]
    return {
        i
        for i, e in events.items()
        if routes.route(e.type) is IGNORE
        and (group != GROUP_API or e.type is not EventType.INITIATED or e.payment_id in listed)
    }


def every_event_accounted(ev: Evidence) -> Violations:
    found = [f"consumer group {g} is {n} messages behind the log" for g, n in ev.lag.items() if n]
    undecodable = [m for m in ev.log if m.event is None]
    found.extend(f"message {m.partition}:{m.offset} is not an event" for m in undecodable)
    events = ev.events()
    listed = {p["id"] for p in ev.payments}
    for group, seen in ev.recorded.items():
        missing = set(events) - seen - _passed_over(group, events, listed)
        if missing:
            sample = ", ".join(sorted(str(i) for i in missing)[:5])
            found.append(f"group {group} never applied {len(missing)} events (e.g. {sample})")
    found.extend(f"the ledger dead-lettered {d}" for d in ev.ledger_dead_letters)
    found.extend(
        f"dead letter {m.partition}:{m.offset} on the dead-letter topic"
        for m in ev.dead_letter_topic
    )
    return found


def acknowledged_kept(ev: Evidence) -> Violations:
    """What was acknowledged survived every loss: each payment answered 202 exists (the
    commit was on the standby too), and each event Kafka acknowledged is in the log (acks=all
    with two replicas in sync)."""
    listed = {p["id"] for p in ev.payments}
    found = [
        f"payment {pid} ({sent.key}) was answered 202 and is missing from the API's list"
        for sent in ev.sent
        for pid in sent.ids - listed
    ]
    lost = ev.acknowledged - set(ev.events())
    if lost:
        sample = ", ".join(sorted(str(i) for i in lost)[:5])
        found.append(f"{len(lost)} events Kafka acknowledged are not in the log (e.g. {sample})")
    return found


def authorizations_ended(ev: Evidence) -> Violations:
    """Every authorization was captured (at most what it held, as the payment reports) or
    voided, none is left holding a card's funds; every capture and cancel got a definite
    answer (a 409 only for a payment whose authorization had expired first)."""
    by_payment = {p["id"]: p for p in ev.payments}
    found = []
    captured: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in ev.authorizations:
        payment = by_payment.get(a["reference"])
        if payment is None:
            found.append(f"authorization {a['id']} is for {a['reference']}, which no merchant has")
        elif a["status"] == "requires_capture":
            found.append(
                f"authorization {a['id']} of {payment['status']} payment {payment['id']} "
                f"still holds {a['amount_capturable']}"
            )
        elif a["status"] == "captured":
            captured[a["reference"]].append(a)
    for pid, held in captured.items():
        payment = by_payment[pid]
        if len(held) > 1 or payment["status"] not in ("succeeded", "refunded"):
            ids = ", ".join(a["id"] for a in held)
            found.append(f"{payment['status']} payment {pid} was captured by {ids}")
        elif held[0]["amount_captured"] != received(payment):
            found.append(
                f"payment {pid} reports {received(payment)} received, "
                f"its authorization captured {held[0]['amount_captured']}"
            )
    for action in ev.actions:
        payment = by_payment.get(str(action.body["id"]), {})
        expired = payment.get("cancellation_reason") == "expired"
        if action.accepted or (expired and action.outcome == "rejected:409:payment_invalid_state"):
            continue
        found.append(f"{action.key} got {action.outcome}; the payment is {payment.get('status')}")
    return found


def sagas_finished(ev: Evidence) -> Violations:
    return [f"saga {s} is neither ended nor waiting on a timer" for s in ev.unfinished_sagas]


CHECKS: dict[str, Callable[[Evidence], Violations]] = {
    "1 every payment terminal": all_terminal,
    "2 at most one charge, failed never charged": one_charge_each,
    "3 ledger check and balances": ledger_agrees,
    "4 every terminal event delivered, signed": webhooks_delivered,
    "5 one payment per idempotency key": one_payment_per_key,
    "6 every event applied by every group": every_event_accounted,
    "9 every 202 and every acknowledged event kept": acknowledged_kept,
    "10 every authorization captured (within it) or voided": authorizations_ended,
    "11 every saga ended or waiting on its timer": sagas_finished,
    "12 no merchant balance ever negative, the API's the ledger's": balances_never_negative,
    "13 each payout paid at most once, every 202 paid or failed": payouts_once,
    "14 captured within each hold, none held past its TTL": holds_within_bounds,
}


def check_all(ev: Evidence) -> dict[str, Violations]:
    return {name: check(ev) for name, check in CHECKS.items()}
