"""Scenarios 3 and 6, end to end and resources.

3: completed payments/s (accepted -> ledger posted -> webhook delivered) through every role,
with the gateway simulator at a fixed latency; then the latency distribution at fixed offered
rates (open loop) from well below to beyond that maximum, so the knee shows.
6: peak RSS and CPU share of each role, Kafka and PostgreSQL over the whole of scenario 3.
Per completed payment over each burst: CPU milliseconds of each role (robust to a noisy
machine, unlike rates) and PostgreSQL commits (``pg_stat_database.xact_commit``).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import loadgen, profile
from bench.env import Bench, isolated, poll
from bench.procstat import (
    Usage,
    busy_between,
    cpu_seconds,
    machine_jiffies,
    threads_cpu_seconds,
    watching,
)
from bench.scenarios.intake import start_api
from tests.helpers.servers import free_port
from workers.api import read_model
from workers.api.merchants import NewMerchant, create_merchant
from workers.core.config import Settings
from workers.core.sealing import keyring
from workers.core.sql import load_queries
from workers.core.threads import NAME_BYTES
from workers.devstack.paths import StackPaths
from workers.devstack.procs import read_pid
from workers.notifier.endpoints import register_endpoint

Q = load_queries("bench")
RETRY_SCHEDULE_S = [0, 1, 2, 4, 8, 16]
# The read model runs in serve-api's processes: its own threads (named by the engine), and
# librdkafka's, for serve-api has no Kafka client but the read model's.
READ_MODEL = "read model (in api)"
READ_MODEL_THREADS = (read_model.ROLE[:NAME_BYTES], "rdk:")
# The stack's shared processes, apart from the roles in the cost tables.
SHARED = ("postgresql", "kafka")


@dataclass(frozen=True)
class EndToEndSizes:
    burst: int = 5000  # payments sent at once to find the maximum completed rate
    bursts: int = 3  # the maximum is the median burst's
    burst_concurrency: int = 64
    seconds: float = 15.0  # at each offered rate
    fractions: tuple[float, ...] = (0.25, 0.5, 0.65, 0.8, 0.95, 1.1)
    latency_ms: int = 20
    api_workers: int = os.cpu_count() or 1
    # Beyond the knee a rate leaves a backlog: stop waiting for it after this long (what
    # did not complete in time shows as completed < accepted).
    drain_timeout_s: float = 60.0
    # A burst is measured to its last payment: wait that long for it.
    burst_drain_timeout_s: float = 900.0
    profile: bool = True
    profile_role: str | None = None  # py-spy on this role; None: the busiest after the burst
    instances: int = 1  # of each consumer role and relay (docs/scaling.md compares 1 and 2)


@dataclass
class Window:
    t0: datetime
    t1: datetime


def run(base: Settings, sizes: EndToEndSizes) -> dict[str, Any]:
    with isolated(base, "e2e") as bench:
        merchant, url = _start_roles(bench, sizes)
        if sizes.profile_role not in (None, *bench.roles):
            raise ValueError(f"no role {sizes.profile_role!r}: one of {', '.join(bench.roles)}")
        _run_once(bench, merchant, url, rate=5, seconds=1, sizes=sizes)  # every group joined
        processes = _processes(bench, base)
        with watching(processes) as usage:
            burst = _median_burst(bench, merchant, url, sizes)
            points, profiled = _sweep(
                bench, merchant, url, burst["completed_per_s"], sizes, processes
            )
    return {
        "sizes": sizes.__dict__,
        "max": burst,
        "points": points,
        "at_50": _nearest(points, 0.5),
        "at_80": _nearest(points, 0.8),
        "resources": _resources(usage),
        "profile": profiled,
    }


def _start_roles(bench: Bench, sizes: EndToEndSizes) -> tuple[NewMerchant, str]:
    sim_port, sink_port = free_port(), free_port()
    with bench.connect() as conn:
        merchant = create_merchant(conn, "Bench end to end")
        url = f"http://127.0.0.1:{sink_port}/hooks"
        endpoint = register_endpoint(
            conn, merchant.id, url, bench.settings.notifier, keyring(bench.settings)
        )
    bench.roles["webhook-receiver"] = loadgen.receiver(bench.stack, sink_port, endpoint.secret)
    # A delivery that fails once must not hold the measurement for the production schedule's
    # 5 minutes before its retry.
    bench.env["FLOWPAY_NOTIFIER__SCHEDULE_S"] = json.dumps(RETRY_SCHEDULE_S)
    sim = f"http://127.0.0.1:{sim_port}"
    bench.start(
        "gateway-sim",
        [
            "serve-gateway-sim",
            "--port",
            str(sim_port),
            "--db",
            str(bench.tmp / "sim.sqlite3"),
            "--latency-ms",
            str(sizes.latency_ms),
        ],
        health_url=sim + "/healthz",
    )
    bench.env["FLOWPAY_GATEWAY__URL"] = sim
    url = start_api(bench, sizes.api_workers)
    for role in ("outbox", "processor", "orchestrator", "ledger", "notifier"):
        for n in range(sizes.instances):
            bench.start(role if n == 0 else f"{role}-{n + 1}", [f"run-{role}"])
    return merchant, url


def _processes(bench: Bench, base: Settings) -> dict[str, int]:
    paths = StackPaths.of(base)
    shared = {
        "kafka": read_pid(paths.kafka_pid),
        "postgresql": read_pid(paths.pg_data / "postmaster.pid"),
    }
    roles = {name: process.pid for name, process in bench.roles.items()}
    return {**roles, **{name: pid for name, pid in shared.items() if pid is not None}}


def _now(bench: Bench) -> datetime:
    value: datetime = bench.scalar(Q["now"])
    return value


def _run_once(
    bench: Bench,
    merchant: NewMerchant,
    url: str,
    *,
    rate: float,
    seconds: float,
    sizes: EndToEndSizes,
    concurrency: int = 1,
    count: int = 0,
    drain_s: float | None = None,
) -> tuple[Window, dict[str, Any]]:
    """Send, then wait until every payment accepted in the window is completed (or time out)."""
    t0 = _now(bench)
    sent = loadgen.run(
        url,
        merchant.api_key,
        seconds=seconds,
        rate=rate,
        concurrency=concurrency,
        count=count,
        run_id=f"r{time.monotonic_ns()}",
    )
    window = Window(t0, _now(bench))
    accepted = _accepted(bench, window)
    drain = sizes.drain_timeout_s if drain_s is None else drain_s
    poll(lambda: len(_completed(bench, window)) >= accepted, drain, every_s=0.25)
    return window, sent


def _accepted(bench: Bench, window: Window) -> int:
    return int(bench.scalar(Q["accepted_in_window"], {"t0": window.t0, "t1": window.t1}))


def _completed(bench: Bench, window: Window) -> list[tuple[float, datetime]]:
    with bench.connect() as conn:
        rows = conn.execute(Q["completed_in_window"], {"t0": window.t0, "t1": window.t1})
        return [(float(s), at) for s, at in rows.fetchall()]


def _median_burst(
    bench: Bench, merchant: NewMerchant, url: str, sizes: EndToEndSizes
) -> dict[str, Any]:
    """The burst of median completed rate out of ``sizes.bursts``, with every burst's rate."""
    bursts = [_burst(bench, merchant, url, sizes) for _ in range(max(1, sizes.bursts))]
    ranked = sorted(bursts, key=lambda b: float(b["completed_per_s"]))
    return {**ranked[len(ranked) // 2], "bursts_per_s": [b["completed_per_s"] for b in bursts]}


def _burst(bench: Bench, merchant: NewMerchant, url: str, sizes: EndToEndSizes) -> dict[str, Any]:
    """The maximum completed rate: a backlog sent as fast as intake takes it, timed to the end;
    what each role spent per completed payment meanwhile."""
    cpu_before = _cpu(bench)
    commits_before = _commits(bench)
    window, sent = _run_once(
        bench,
        merchant,
        url,
        rate=0,
        seconds=600,
        count=sizes.burst,
        sizes=sizes,
        concurrency=sizes.burst_concurrency,
        drain_s=sizes.burst_drain_timeout_s,
    )
    done = sorted(at for _s, at in _completed(bench, window))
    # From the first completion to the last: the pipeline's drain rate, without its fill time.
    span = (done[-1] - done[0]).total_seconds() if len(done) > 1 else 0.0
    cpu = {name: used - cpu_before.get(name, 0.0) for name, used in _cpu(bench).items()}
    commits = _commits(bench) - commits_before
    return {
        "accepted": _accepted(bench, window),
        "completed": len(done),
        "cpu_ms_per_payment": {
            name: round(1000 * used / max(1, len(done)), 3) for name, used in cpu.items()
        },
        "commits_per_payment": round(commits / max(1, len(done)), 2),
        "seconds": round(span, 2),
        "completed_per_s": round((len(done) - 1) / span, 1) if span else 0.0,
        "intake_per_s": round(sent["accepted_per_s"], 1),
        "stages_p50_ms": _stages(bench, window),
    }


def _cpu(bench: Bench) -> dict[str, float]:
    """CPU seconds so far of each role (its process tree), and of the read model alone."""
    return _with_read_model({name: process.pid for name, process in bench.roles.items()})


def _with_read_model(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each of ``processes`` (its tree), and of the read model alone
    when serve-api is among them."""
    used = {name: cpu_seconds(pid) for name, pid in processes.items()}
    if "api" in processes:
        threads = threads_cpu_seconds(processes["api"], READ_MODEL_THREADS)
        if not threads[READ_MODEL_THREADS[0]][1]:
            # Unnamed, they would leave only librdkafka's: a small figure, and a wrong one.
            raise RuntimeError("bench: no thread of serve-api is named for the read model")
        used[READ_MODEL] = sum(seconds for seconds, _count in threads.values())
    return used


def _commits(bench: Bench) -> int:
    """Transactions committed in the bench's database so far (the bench's own polls among
    them: a few a second)."""
    return int(bench.scalar(Q["commits"]))


def _sweep(
    bench: Bench,
    merchant: NewMerchant,
    url: str,
    maximum: float,
    sizes: EndToEndSizes,
    processes: dict[str, int],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    points, profiled = [], None
    busiest = sizes.profile_role or _busiest(bench)
    for index, fraction in enumerate(sizes.fractions):
        rate = max(1.0, round(maximum * fraction, 1))
        # The profiler runs through the last (highest) rate only: the others stay unperturbed.
        spy = None
        if sizes.profile and index == len(sizes.fractions) - 1:
            out = bench.tmp / "profile.txt"
            spy = profile.start(bench.roles[busiest].pid, sizes.seconds, out)
        before = _Costs.now(bench, processes)
        window, sent = _run_once(
            bench, merchant, url, rate=rate, seconds=sizes.seconds, sizes=sizes
        )
        after = _Costs.now(bench, processes)  # before the point's own queries add to it
        if spy is not None:
            spy.wait(60)
            profiled = {
                "role": busiest,
                "at_fraction": fraction,
                **profile.summarise(bench.tmp / "profile.txt"),
            }
        point = _point(bench, window, fraction, rate, sent)
        points.append({**point, **after.since(before, point["accepted"])})
    return points, profiled


@dataclass(frozen=True)
class _Costs:
    """What a stretch of offered load cost: CPU of each process, commits, the machine's use."""

    cpu_s: dict[str, float]
    commits: int
    jiffies: tuple[int, int]

    @classmethod
    def now(cls, bench: Bench, processes: dict[str, int]) -> _Costs:
        return cls(_with_read_model(processes), _commits(bench), machine_jiffies())

    def since(self, before: _Costs, payments: int) -> dict[str, Any]:
        """Per payment accepted between ``before`` and this snapshot: CPU ms of each process,
        and commits; and how busy the whole machine was (at 100 % every stage also waits for
        a core)."""
        per = max(1, payments)
        return {
            "machine_busy": round(busy_between(before.jiffies, self.jiffies), 3),
            "commits_per_payment": round((self.commits - before.commits) / per, 2),
            "cpu_ms_per_payment": {
                name: round(1000 * (used - before.cpu_s[name]) / per, 2)
                for name, used in self.cpu_s.items()
            },
        }


def _busiest(bench: Bench) -> str:
    """The role with the most CPU time so far (the burst made it work hardest)."""
    return max(bench.roles, key=lambda name: cpu_seconds(bench.roles[name].pid))


def _point(
    bench: Bench, window: Window, fraction: float, rate: float, sent: dict[str, Any]
) -> dict[str, Any]:
    latencies = sorted(s * 1000 for s, _at in _completed(bench, window))
    accepted = _accepted(bench, window)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else []
    return {
        "fraction_of_max": fraction,
        "offered_per_s": rate,
        "accepted": accepted,
        "completed": len(latencies),
        "completed_per_s": round(len(latencies) / sent["seconds"], 1),
        "p50_ms": round(cuts[49], 1) if cuts else None,
        "p99_ms": round(cuts[98], 1) if cuts else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "stages_p50_ms": _stages(bench, window),
        "intake_p99_ms": sent["p99_ms"],
        "loadgen_cpu_percent": sent["loadgen_cpu_percent"],
    }


def _stages(bench: Bench, window: Window) -> dict[str, float]:
    """Median milliseconds from acceptance to each step: which stage the latency is spent in."""
    with bench.connect() as conn:
        conn.execute(Q["analyze_stages"])
        cursor = conn.execute(Q["stages_in_window"], {"t0": window.t0, "t1": window.t1})
        names = [c.name for c in cursor.description or ()]
        rows = cursor.fetchall()
    if not rows:
        return {}
    return {
        name: round(1000 * statistics.median(float(r[i]) for r in rows), 1)
        for i, name in enumerate(names)
    }


def _nearest(points: list[dict[str, Any]], fraction: float) -> dict[str, Any] | None:
    return min(points, key=lambda p: abs(p["fraction_of_max"] - fraction), default=None)


def _resources(usage: Usage) -> dict[str, Any]:
    return {
        "seconds": round(usage.seconds, 1),
        "cpu_percent_of_one_core": usage.cpu_percent,
        "peak_rss_mb": usage.peak_rss_mb,
        "cores": os.cpu_count(),
    }


def table(
    result: dict[str, Any], intake_per_s: float | None
) -> tuple[str, list[str], list[list[Any]]]:
    top = result["max"]
    of_intake = f"{top['completed_per_s'] / intake_per_s:.0%}" if intake_per_s else "-"
    rows: list[list[Any]] = [
        ["maximum (burst)", "-", f"{top['completed_per_s']:.0f}", "-", "-", "-", of_intake]
    ]
    rows += [
        [
            f"{p['fraction_of_max']:.0%} of max",
            f"{p['offered_per_s']:.0f}",
            f"{p['completed_per_s']:.0f}",
            p["p50_ms"],
            p["p99_ms"],
            p["max_ms"],
            "-",
        ]
        for p in result["points"]
    ]
    columns = ["load", "offered/s", "completed/s", "p50 ms", "p99 ms", "max ms", "of intake"]
    return "3. End to end: accepted -> ledger posted -> webhook delivered", columns, rows


def per_payment_table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    """CPU per completed payment of each process over the median burst, and commits."""
    top = result["max"]
    cpu = top.get("cpu_ms_per_payment", {})
    rows: list[list[Any]] = [
        [name, f"{ms:.3f}"] for name, ms in sorted(cpu.items(), key=lambda kv: -kv[1])
    ]
    rows.append(["PostgreSQL commits (count, not ms)", top.get("commits_per_payment", "-")])
    bursts = ", ".join(f"{r:.0f}" for r in top.get("bursts_per_s", []))
    title = (
        f"3. Per completed payment, median burst of {top['completed']} (bursts: {bursts} /s;"
        " api includes the read model, also shown alone)"
    )
    return title, ["process", "CPU ms per payment"], rows


def costs_table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    """What a payment costs at each offered load: a small batch costs about what a large one
    does, so the lower the load, the more each payment costs."""
    points = [p for p in result["points"] if "machine_busy" in p]
    apart = (*SHARED, READ_MODEL)  # the read model is inside serve-api's figure
    rows = [
        [
            _load(p),
            f"{p['offered_per_s']:.0f}",
            f"{p['machine_busy']:.0%}",
            p["commits_per_payment"],
            f"{sum(ms for n, ms in p['cpu_ms_per_payment'].items() if n not in apart):.1f}",
            *(f"{p['cpu_ms_per_payment'].get(name, 0.0):.1f}" for name in SHARED),
        ]
        for p in points
    ]
    columns = [
        "load", "offered/s", "machine busy", "commits", "roles CPU ms", "PostgreSQL ms", "Kafka ms"
    ]  # fmt: skip
    return "3. What one payment costs, by offered load (per payment accepted)", columns, rows


def roles_table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    """Each role's CPU per payment at each offered load: where a small batch's cost lands."""
    points = [p for p in result["points"] if "machine_busy" in p]
    names = [n for n in (points[0]["cpu_ms_per_payment"] if points else {}) if n not in SHARED]
    rows = [
        [_load(p), *(f"{p['cpu_ms_per_payment'].get(n, 0.0):.2f}" for n in names)] for p in points
    ]
    title = "3. CPU ms per payment of each role, by offered load (api includes the read model)"
    return title, ["load", *names], rows


def stages_table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    burst = {**result["max"], "fraction_of_max": None}
    points = [p for p in (burst, *result["points"]) if p.get("stages_p50_ms")]
    steps = list(points[0]["stages_p50_ms"]) if points else []
    rows = [[_load(p), *(p["stages_p50_ms"][s] for s in steps)] for p in points]
    title = "3. Where the end-to-end time goes: median ms after acceptance, by offered load"
    return title, ["load", *(s.replace("_", " ") for s in steps)], rows


def _load(point: dict[str, Any]) -> str:
    fraction = point["fraction_of_max"]
    return "burst" if fraction is None else f"{fraction:.0%}"


def resources_table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    res = result["resources"]
    rows = [
        [name, f"{cpu:.0f}%", f"{cpu / res['cores']:.0f}%", res["peak_rss_mb"].get(name, "-")]
        for name, cpu in sorted(res["cpu_percent_of_one_core"].items(), key=lambda kv: -kv[1])
    ]
    title = f"6. Resources during scenario 3 ({res['seconds']:.0f} s)"
    return title, ["process", "CPU (% of one core)", "of the machine", "peak RSS MB"], rows


def save_plot(result: dict[str, Any], path: Path) -> None:
    """End-to-end latency against offered load: p50, p99 and max, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in result["points"] if p["p50_ms"] is not None]
    rates = [p["offered_per_s"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s-"), ("max_ms", "^--")):
        ax.plot(rates, [p[key] for p in points], style, label=key.removesuffix("_ms"))
    top = result["max"]["completed_per_s"]
    ax.axvline(top, color="grey", linestyle=":", label="maximum (burst)")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (payments/s, open loop)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title("FlowPay end to end: accepted -> ledger posted -> webhook delivered")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
