"""What a run prints and writes: rich tables, the JSON record, the docs' figures and plot."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scenarios import clients, e2e, engine, intake, outbox, processor, replay
from flowpay_cli.output import print_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
PLOT = ROOT / "docs" / "e2e-latency.png"
BEGIN, END = "<!-- bench:figures:begin -->", "<!-- bench:figures:end -->"

Table = tuple[str, list[str], list[list[Any]]]


def tables(record: dict[str, Any]) -> list[Table]:
    """Every scenario's table, in the issue's order, for the scenarios the run holds."""
    found = record["scenarios"]
    pg = found.get("intake", {}).get("pgbench", {}).get("tps")
    best_intake = found.get("intake", {}).get("best_accepted_per_s")
    out: list[Table] = []
    if "intake" in found:
        out.append(intake.table(found["intake"]))
    if "outbox" in found:
        out.append(outbox.table(found["outbox"], pg))
        out += _profile_tables(found["outbox"]["relay"])
    if "e2e" in found:
        out.append(e2e.table(found["e2e"], best_intake))
        out.append(e2e.stages_table(found["e2e"]))
        out.append(e2e.costs_table(found["e2e"]))
        out.append(e2e.roles_table(found["e2e"]))
        out.append(e2e.per_payment_table(found["e2e"]))
    if "replay" in found:
        out.append(replay.table(found["replay"]))
        out += _profile_tables(found["replay"]["replay"])
    if "clients" in found:
        out.append(clients.table(found["clients"]))
    if "e2e" in found:
        out.append(e2e.resources_table(found["e2e"]))
        out += _profile_tables(found["e2e"])
    if "processor" in found:
        out.append(processor.table(found["processor"]))
    if "engine" in found:
        out.append(engine.table(found["engine"]))
    targets = _targets(found)
    if targets:
        out.append(("Against issue 7's targets", ["target", "measured", "met"], targets))
    return out


def _profile_tables(result: dict[str, Any]) -> list[Table]:
    profiled = result.get("profile")
    return [_profile_table(profiled)] if profiled and profiled.get("samples") else []


def _profile_table(profiled: dict[str, Any]) -> Table:
    rows = [[frame, f"{share}%", "own"] for frame, share in profiled["own_percent"]]
    rows += [[frame, f"{share}%", "total"] for frame, share in profiled["flowpay_total_percent"]]
    when = f" at {profiled['at_fraction']:.0%} of max" if "at_fraction" in profiled else ""
    title = f"py-spy on {profiled['role']}{when} ({profiled['samples']} samples)"
    return title, ["frame", "of samples", "own / total"], rows


def _targets(found: dict[str, Any]) -> list[list[Any]]:
    """Issue 7's targets beside what was measured. Reported, never asserted."""
    rows: list[list[Any]] = []
    pg = found.get("intake", {}).get("pgbench", {}).get("tps")

    def add(target: str, value: float | None, measured: str, ok: bool) -> None:
        if value is not None:
            rows.append([target, measured, "yes" if ok else "no"])

    if pg:
        best = found["intake"]["best_accepted_per_s"]
        add("intake >= 35% of pgbench", best, f"{best / pg:.0%}", best / pg >= 0.35)
        if "outbox" in found:
            relay = found["outbox"]["relay"]["events_per_s"]
            add("relay >= 100% of pgbench", relay, f"{relay / pg:.0%}", relay >= pg)
        if "e2e" in found:
            top = found["e2e"]["max"]["completed_per_s"]
            add("end to end >= 10% of pgbench", top, f"{top / pg:.0%}", top / pg >= 0.10)
    if "e2e" in found and found["e2e"]["at_50"]:
        p99 = found["e2e"]["at_50"]["p99_ms"]
        add("p99 <= 1 s at 50% of max", p99, f"{p99} ms", p99 is not None and p99 <= 1000)
    if "e2e" in found:
        rows += _issue_14_targets(found)
    if "replay" in found:
        rate = found["replay"]["replay"]["events_per_s"]
        add("replay >= 20,000 events/s", rate, f"{rate:.0f}/s", rate >= 20_000)
    if "e2e" in found:
        resources = found["e2e"]["resources"]["peak_rss_mb"]
        roles = {k: v for k, v in resources.items() if k not in ("kafka", "postgresql")}
        worst = max(roles.values(), default=0.0)
        add("every role < 200 MB RSS", worst, f"largest {worst:.0f} MB", worst < 200)
    return rows


# Issue 14's bounds on what each role spends per completed payment (ms of CPU).
CPU_MS_PER_PAYMENT = {"processor": 1.0, "notifier": 1.0, "ledger": 0.3, e2e.READ_MODEL: 0.3}


def _issue_14_targets(found: dict[str, Any]) -> list[list[Any]]:
    """Issue 14's targets for the end-to-end burst and sweep, from the same run."""
    rows: list[list[Any]] = []
    top = found["e2e"]["max"]
    at_64 = [
        level["accepted_per_s"]
        for level in found.get("intake", {}).get("levels", [])
        if level["concurrency"] == 64
    ]
    if at_64:
        share = top["completed_per_s"] / at_64[0]
        rows.append(["end to end >= 25% of intake at 64", f"{share:.0%}", _met(share >= 0.25)])
    for fraction, key, limit in ((0.5, "p99_ms", 500), (0.25, "p50_ms", 50)):
        point = next(
            (p for p in found["e2e"]["points"] if abs(p["fraction_of_max"] - fraction) < 1e-9),
            None,
        )
        if point and point[key] is not None:
            name = f"{key.removesuffix('_ms')} <= {limit} ms at {fraction:.0%} of max"
            rows.append([name, f"{point[key]} ms", _met(point[key] <= limit)])
    cpu = top.get("cpu_ms_per_payment", {})
    for role, bound in CPU_MS_PER_PAYMENT.items():
        if role in cpu:
            rows.append([f"{role} <= {bound} ms CPU per payment", f"{cpu[role]:.3f} ms",
                         _met(cpu[role] <= bound)])  # fmt: skip
    commits = top.get("commits_per_payment")
    if commits is not None:
        rows.append(["<= 2 PostgreSQL commits per payment", f"{commits}", _met(commits <= 2)])
    return rows


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def show(record: dict[str, Any]) -> None:
    for title, columns, rows in tables(record):
        print_table(title, columns, rows)


def save(record: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(record, indent=2, default=str) + "\n"
    path = RESULTS / f"{stamp}.json"
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return path


def _markdown(table: Table) -> str:
    title, columns, rows = table
    lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def update_docs(record: dict[str, Any]) -> None:
    """Replace the figures between the markers of docs/performance.md; draw the plot."""
    if "e2e" in record["scenarios"]:
        e2e.save_plot(record["scenarios"]["e2e"], PLOT)
    machine, versions = record["machine"], record["versions"]
    head = (
        f"Run of {record['started_at']} ({record['duration_s']:.0f} s): {machine['nproc']} cores "
        f"({machine['cpu']}), {machine['memory_gib']} GiB; Python {versions['python']}, "
        f"PostgreSQL {versions['postgresql']} (synchronous_commit="
        f"{record['postgresql']['synchronous_commit']}), Kafka {versions['kafka']}, "
        f"librdkafka {versions['librdkafka']}. Load average at start: "
        f"{machine['load_average_at_start']}. Sizes: `{json.dumps(record['sizes'])}`."
    )
    body = "\n\n".join([head, *(_markdown(t) for t in tables(record))])
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    DOC.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{body}\n{END}", text))
