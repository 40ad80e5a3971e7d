"""The summary: a table for people, and the same figures as JSON under ``reports/``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from chaos.faults import FAILOVERS
from chaos.scenario import Outcome, recovery_stats

RECOVERY_MEANS = (
    "seconds from the end of a fault (process restarted, broker or database started again, "
    "fault flags cleared) until a payment sent at that moment is terminal in the API, applied "
    "by the ledger and delivered to the webhook receiver"
)


def summary(outcome: Outcome) -> dict[str, Any]:
    sent = outcome.sent
    return {
        "config": asdict(outcome.config),
        "ok": outcome.ok,
        "payments": {
            "requests": len(sent),
            "accepted": sum(1 for s in sent if s.accepted),
            "resent_same_key": sum(s.resends for s in sent),
            "by_status": outcome.statuses,
            "refunds_requested": len(outcome.refunds),
            "refunds_accepted": sum(1 for r in outcome.refunds if r.accepted),
            "captures_and_cancels_accepted": sum(1 for a in outcome.actions if a.accepted),
        },
        "payouts": {
            "requests": len(outcome.payouts),
            "skipped_nothing_spare": outcome.payouts_skipped,
            "accepted": sum(1 for p in outcome.payouts if p.accepted),
            "resent_same_key": sum(p.resends for p in outcome.payouts + outcome.overdrafts),
            "by_status": outcome.payout_statuses,
            "overdrafts_refused": sum(1 for p in outcome.overdrafts if not p.accepted),
            "overdrafts": len(outcome.overdrafts),
        },
        "faults": recovery_stats(outcome.faults),
        "fault_log": [asdict(f) for f in outcome.faults],
        "recovery_means": RECOVERY_MEANS,
        "violations": {name: found for name, found in outcome.violations.items()},
        "violation_count": sum(len(v) for v in outcome.violations.values()),
        "seconds": {k: round(v, 1) for k, v in outcome.seconds.items()},
        "kept_files": str(outcome.home) if outcome.home else None,
    }


def write_json(data: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"chaos-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def show(data: dict[str, Any], console: Console) -> None:
    payments = data["payments"]
    table = Table(title="chaos run", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("recovery p50 s", justify="right")
    table.add_column("recovery max s", justify="right")
    table.add_row("payments requested", str(payments["requests"]), "", "")
    table.add_row("payments accepted", str(payments["accepted"]), "", "")
    for status, count in sorted(payments["by_status"].items()):
        table.add_row(f"  {status}", str(count), "", "")
    table.add_row("requests resent with the same key", str(payments["resent_same_key"]), "", "")
    table.add_row("refunds accepted", str(payments["refunds_accepted"]), "", "")
    accepted = str(payments["captures_and_cancels_accepted"])
    table.add_row("captures and cancels accepted", accepted, "", "")
    payouts = data["payouts"]
    table.add_row("payouts requested (of a part of the balance)", str(payouts["requests"]), "", "")
    skipped = str(payouts["skipped_nothing_spare"])
    table.add_row("payouts not sent: nothing spare in the balance", skipped, "", "")
    table.add_row("payouts accepted", str(payouts["accepted"]), "", "")
    for status, count in sorted(payouts["by_status"].items()):
        table.add_row(f"  {status}", str(count), "", "")
    refused = f"{payouts['overdrafts_refused']} of {payouts['overdrafts']}"
    table.add_row("payouts above any balance refused", refused, "", "")
    table.add_row(
        "payout requests resent with the same key", str(payouts["resent_same_key"]), "", ""
    )
    for kind, stats in data["faults"].items():
        late = stats["count"] - stats["recovered"]
        count = f"{stats['count']}" + (f" ({late} not recovered)" if late else "")
        table.add_row(f"fault: {kind}", count, _s(stats["p50_s"]), _s(stats["max_s"]))
    for fault in data["fault_log"]:
        if fault["kind"] in FAILOVERS:  # each failover's own recovery, not only the p50
            at = f"  {fault['kind']} at {fault['at_s']:.0f} s"
            table.add_row(at, "", _s(fault["recovery_s"]) or "not recovered", "")
    for name, found in data["violations"].items():
        table.add_row(f"violations: {name}", str(len(found)), "", "", style="red" if found else "")
    table.add_row("violations (must be 0)", str(data["violation_count"]), "", "")
    seconds = ", ".join(f"{k} {v}" for k, v in data["seconds"].items())
    table.add_row(f"seconds: {seconds}", "", "", "")
    console.print(table)
    console.print(f"recovery: {data['recovery_means']}.", style="dim")
    for name, found in data["violations"].items():
        for line in found[:50]:
            console.print(f"[red]violation[/] {name}: {line}", markup=True, highlight=False)


def _s(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"
