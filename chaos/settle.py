"""Waiting for quiet after the faults: nothing in flight anywhere, every group at the log's end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chaos import eventlog
from chaos.stack import ChaosStack
from workers.core import local_http
from workers.core.db import connect
from workers.core.sql import load_queries
from workers.core.status import TERMINAL
from workers.core.topics import GROUP_LEDGER, topics

Q = load_queries("chaos")


def sim_charges(stack: ChaosStack) -> list[dict[str, Any]]:
    return _sim_list(stack, "charges")


def sim_authorizations(stack: ChaosStack) -> list[dict[str, Any]]:
    return _sim_list(stack, "authorizations")


def sim_payouts(stack: ChaosStack) -> list[dict[str, Any]]:
    return _sim_list(stack, "payouts")


def _sim_list(stack: ChaosStack, what: str) -> list[dict[str, Any]]:
    response = local_http.client().get(f"{stack.sim_url}/_sim/{what}", timeout=30)
    response.raise_for_status()
    return list(response.json()["data"])


def unreversed(charges: list[dict[str, Any]], failed: set[str]) -> list[dict[str, Any]]:
    """Charges the gateway made for payments FlowPay reports failed, not (fully) given back."""
    return [
        c
        for c in charges
        if c["reference"] in failed
        and c["status"] == "succeeded"
        and c["amount_refunded"] < c["amount"]
    ]


def lag(stack: ChaosStack) -> dict[str, int]:
    """Messages each consumer group has not yet accounted for, summed over partitions."""
    ends = eventlog.end_offsets(stack.settings)
    behind = {}
    for group in eventlog.KAFKA_GROUPS:
        done = eventlog.committed(stack.settings, group)
        behind[group] = sum(end - done.get(p, 0) for p, end in ends.items())
    cursors = ledger_cursors(stack)
    behind[GROUP_LEDGER] = sum(end - cursors.get(p, 0) for p, end in ends.items())
    return behind


def ledger_cursors(stack: ChaosStack) -> dict[int, int]:
    with connect(stack.settings, "operator") as conn:
        rows = conn.execute(Q["ledger_cursors"], {"topic": topics(stack.settings).payments})
        return {int(str(p)): int(str(o)) for p, o in rows.fetchall()}


def in_flight(stack: ChaosStack) -> list[str]:
    """What is still moving; empty when the system has settled."""
    left = []
    with connect(stack.settings, "operator") as conn:
        terminal = {"terminal": sorted(TERMINAL)}
        for name, params, what in (
            ("unsettled_payments", terminal, "payments not yet terminal"),
            ("unsettled_refunds", None, "refunds not yet resolved"),
            ("unsettled_payouts", None, "payouts not yet paid or failed"),
            ("unpublished", None, "outbox rows not yet published"),
            ("pending_deliveries", None, "webhook deliveries pending"),
        ):
            count = _count(conn.execute(Q[name], params).fetchone())
            if count:
                left.append(f"{count} {what}")
        failed = {str(r[0]) for r in conn.execute(Q["failed_payments"]).fetchall()}
    held = local_http.client().get(f"{stack.sim_url}/_sim/stats", timeout=10).json()["held"]
    if held:
        left.append(f"{held} gateway requests still held by the simulator")
    late = unreversed(sim_charges(stack), failed)
    if late:
        left.append(f"{len(late)} charges for failed payments not yet reversed")
    left.extend(f"group {g} is {n} messages behind" for g, n in lag(stack).items() if n)
    return left


def settle(
    stack: ChaosStack, timeout_s: float, tick: Callable[[], object]
) -> tuple[float, list[str]]:
    """Poll until nothing is in flight; (seconds it took, what was still in flight at the end).

    ``tick`` runs before each look (the scenario revives roles that died there).
    """
    started = time.monotonic()
    while True:
        tick()
        try:
            left = in_flight(stack)
        except Exception as exc:  # a component still coming back counts as not settled
            left = [f"not answering yet: {type(exc).__name__}"]
        if not left or time.monotonic() - started > timeout_s:
            return time.monotonic() - started, left
        time.sleep(0.5)


def _count(row: tuple[Any, ...] | None) -> int:
    return int(row[0]) if row is not None else 0
