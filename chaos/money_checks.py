"""The checks of what merchants hold and are paid: balances, payouts, and the cards' holds.

A merchant's balance is what the ledger owes it (``merchant_payable``) less what its payouts in
flight have reserved; the API's projection (``GET /v1/balance``) is what the API reserves
payouts against, so it must come to the same. In the journal, a merchant's entries come from
several partitions, each applied on its own: they are taken in the order their events happened
(the business's order: a payout is reserved after the capture the API credited for it), and
the balance after each event must not be below zero.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from chaos.evidence import Evidence, JournalEntry, Violations, received

# What the API answers a payout above the available balance.
REFUSED = "rejected:422:insufficient_balance"


def balances_never_negative(ev: Evidence) -> Violations:
    found = _journal_dips(ev)
    for b in ev.balances:
        if b["code"] == "merchant_payable" and int(b["posted"]) < 0:
            found.append(f"{b['account']} ends at {b['posted']} posted")
    ledger = _ledger_ends(ev.journal)
    api = _api_balances(ev.api_balances)
    for key in sorted(set(ledger) | set(api)):
        merchant, currency = key
        said = api.get(key, (0, 0))
        held = ledger.get(key, (0, 0))
        if said != held:
            found.append(
                f"merchant {merchant} {currency}: the API's balance is available {said[0]}, "
                f"pending {said[1]}; the ledger's {held[0]}, {held[1]}"
            )
    return found


def _ordered(ev: Evidence) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The journal's entries grouped by event, in the order the events happened."""
    place = {
        m.event.event_id: (m.event.occurred_at, m.partition, m.offset, m.event)
        for m in ev.log
        if m.event is not None
    }
    by_event: dict[Any, list[JournalEntry]] = defaultdict(list)
    for entry in ev.journal:
        by_event[entry.event_id].append(entry)
    unknown = [
        f"the ledger has entries of event {e}, not in the log" for e in by_event if e not in place
    ]
    ordered = sorted((place[e], entries) for e, entries in by_event.items() if e in place)
    return ordered, unknown


def _journal_dips(ev: Evidence) -> Violations:
    """The first point where each merchant's balance went below zero, if it ever did."""
    ordered, found = _ordered(ev)
    balance: dict[tuple[str, str], int] = defaultdict(int)
    dipped: set[tuple[str, str]] = set()
    for (at, _partition, _offset, event), entries in ordered:
        for entry in entries:
            if entry.phase == "posted" or entry.payout:
                balance[(entry.merchant_id, entry.currency)] += entry.signed
        for key in {(e.merchant_id, e.currency) for e in entries} - dipped:
            if balance[key] < 0:
                dipped.add(key)
                found.append(
                    f"merchant {key[0]} {key[1]}: the balance went to {balance[key]} with "
                    f"{event.type.value} of {event.payment_id} at {at.isoformat()}"
                )
    return found


def _ledger_ends(journal: list[JournalEntry]) -> dict[tuple[str, str], tuple[int, int]]:
    """Per merchant and currency: (available, pending) as the ledger ends. Available: posted
    less what payouts in flight reserve; pending: what payments in flight will bring."""
    ends: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for entry in journal:
        which = 1 if entry.phase == "pending" and not entry.payout else 0
        ends[(entry.merchant_id, entry.currency)][which] += entry.signed
    return {key: (a, p) for key, (a, p) in ends.items()}


def _api_balances(balances: dict[str, dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    found: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for merchant, body in balances.items():
        for which, name in enumerate(("available", "pending")):
            for row in body.get(name, []):
                found[(merchant, row["currency"])][which] += int(row["amount"])
    return {key: (a, p) for key, (a, p) in found.items()}


def payouts_once(ev: Evidence) -> Violations:
    by_id = {p["id"]: p for p in ev.payouts}
    found = _requests_answered(ev, by_id)
    paid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in ev.gateway_payouts:
        if g["reference"] not in by_id:
            found.append(f"gateway payout {g['id']} is for {g['reference']}, which no merchant has")
        if g["status"] == "paid":
            paid[g["reference"]].append(g)
    for payout_id, payout in by_id.items():
        found.extend(_payout_agrees(payout, paid.get(payout_id, [])))
    found.extend(_available_as_paid(ev))
    house: dict[str, int] = defaultdict(int)
    for b in ev.balances:
        if b["code"] == "payouts_paid":
            house[b["currency"]] += int(b["posted"])
    total: dict[str, int] = defaultdict(int)
    for p in ev.payouts:
        if p["status"] == "paid":
            total[p["currency"]] += int(p["amount"])
    for currency in sorted(set(house) | set(total)):
        if house[currency] != total[currency]:
            found.append(
                f"payouts_paid:{currency} is {house[currency]}, the payouts paid make "
                f"{total[currency]}"
            )
    return found


def _requests_answered(ev: Evidence, by_id: dict[str, dict[str, Any]]) -> Violations:
    """Each payout request got a definite answer (a part of the balance may still be refused,
    when payouts of the merchant's overlapped); each 202's payout exists; none of more than
    could ever be there was taken."""
    found = [
        f"payout request {s.key} never got a definite answer: {s.outcome}"
        for s in ev.payout_requests
        if not s.accepted and s.outcome != REFUSED
    ]
    found.extend(
        f"payout {pid} ({s.key}) was answered 202 and is missing from the API's list"
        for s in ev.payout_requests
        for pid in s.ids - set(by_id)
    )
    found.extend(
        f"idempotency key {s.key} was answered with {len(s.ids)} different payouts"
        for s in ev.payout_requests
        if len(s.ids) > 1
    )
    found.extend(
        f"payout request {s.key} of {s.body['amount']}, more than could ever be available, "
        f"got {s.outcome}"
        for s in ev.overdrafts
        if s.outcome != REFUSED
    )
    return found


def _payout_agrees(payout: dict[str, Any], paid: list[dict[str, Any]]) -> Violations:
    """A payout ended paid or failed, as the gateway did: paid once, of its amount, or not."""
    pid, status = payout["id"], payout["status"]
    if len(paid) > 1:
        return [f"payout {pid} was paid {len(paid)} times: {', '.join(g['id'] for g in paid)}"]
    if status == "paid" and not paid:
        return [f"payout {pid} is paid but the gateway paid nothing"]
    if status == "paid" and int(paid[0]["amount"]) != int(payout["amount"]):
        return [f"payout {pid} of {payout['amount']} was paid {paid[0]['amount']}"]
    if status != "paid" and paid:
        return [f"payout {pid} is {status} but the gateway paid {paid[0]['id']}"]
    if status not in ("paid", "failed"):
        return [f"payout {pid} is stuck in {status}"]
    return []


def _available_as_paid(ev: Evidence) -> Violations:
    """Each merchant's available balance is what its payments took, less refunds and payouts
    paid: a failed payout's amount came back, and nothing is still reserved."""
    expected: dict[str, int] = defaultdict(int)
    for p in ev.payments:
        if p["status"] in ("succeeded", "refunded"):
            expected[p["merchant_id"]] += received(p) - int(p["refunded_amount"])
    for p in ev.payouts:
        if p["status"] != "failed":
            expected[p["merchant_id"]] -= int(p["amount"])
    api = _api_balances(ev.api_balances)
    available: dict[str, int] = defaultdict(int)
    for (merchant, _currency), (amount, _pending) in api.items():
        available[merchant] += amount
    return [
        f"merchant {m}: the API's balance is {available[m]} available, its payments less "
        f"refunds and payouts not failed make {expected[m]}"
        for m in sorted(set(expected) | set(available))
        if available[m] != expected[m]
    ]


def holds_within_bounds(ev: Evidence) -> Violations:
    """No capture above its hold or a payment above what was authorized; no hold released
    past its TTL (give or take the faults' grace), nor one expired before it."""
    by_payment = {p["id"]: p for p in ev.payments}
    found = [
        f"payment {p['id']} received {p['amount_received']} of {p['amount']}"
        for p in ev.payments
        if int(p.get("amount_received") or 0) > int(p["amount"])
    ]
    for a in ev.authorizations:
        payment = by_payment.get(a["reference"], {})
        if a["amount_captured"] > a["amount"]:
            found.append(
                f"authorization {a['id']} captured {a['amount_captured']} of {a['amount']}"
            )
        if payment and a["amount"] != payment["amount"]:
            found.append(
                f"authorization {a['id']} holds {a['amount']}, payment {payment['id']} "
                f"asked for {payment['amount']}"
            )
        if a.get("ended_at") is None:
            continue  # never held, or still holding (check 10 names those)
        held = (_at(a["ended_at"]) - _at(a["created_at"])).total_seconds()
        if held > ev.authorization_ttl_s + ev.release_grace_s:
            found.append(
                f"authorization {a['id']} was held {held:.1f} s, past its TTL of "
                f"{ev.authorization_ttl_s:g} s"
            )
        if payment.get("cancellation_reason") == "expired" and held < ev.authorization_ttl_s:
            found.append(
                f"authorization {a['id']} expired after {held:.1f} s, before its TTL of "
                f"{ev.authorization_ttl_s:g} s"
            )
    return found


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)
