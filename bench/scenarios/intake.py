"""Scenario 1, intake: accepted payments/s and latency of POST /v1/payments at fixed
concurrency levels; baseline: pgbench running the same transaction on the same database."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from bench import loadgen
from bench.env import Bench, isolated
from bench.events import initiated
from bench.procstat import watching
from tests.helpers.servers import free_port
from workers.api.merchants import create_merchant
from workers.core.config import Settings
from workers.core.db import database_url
from workers.core.outbox import outbox_row
from workers.core.sql import load_queries

# pgbench runs the very statement POST /v1/payments commits (workers/api/queries.sql,
# payment_create), each placeholder bound to a pgbench variable or an expression of one, so
# that every transaction has its own key, payment and event (-M prepared, like psycopg's).
QUERY = "payment_create"
BINDINGS = {
    "lock": ":r",
    "key": "('k' || :r::text)",
    "id": "('pay_' || :r::text)",
    "event_id": "gen_random_uuid()",
    "message_key": "convert_to('pay_' || :r::text, 'UTF8')",
    "location": "('/v1/payments/pay_' || :r::text)",
    "request_hash": "sha256(convert_to(:r::text, 'UTF8'))",
    "merchant_id": ":merchant",
    "amount": "1999",
    "currency": "'USD'",
    "payment_method": "'pm_card_visa'",
    "description": "NULL::text",
    "metadata": "'{}'::jsonb",
    "created_at": "now()",
    "capture_method": "'automatic'",
    "client_secret": "('pay_' || :r::text || '_secret_' || md5(:r::text))",
    "status": "202",
    "value": "decode(:value, 'hex')",
    "headers": ":headers::jsonb",
    "body": "decode(:body, 'hex')",
}
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class IntakeSizes:
    levels: tuple[int, ...] = (1, 16, 64, 256)
    seconds: float = 10.0
    pgbench_clients: int = 32
    pgbench_seconds: float = 10.0
    api_workers: int = os.cpu_count() or 1


def run(base: Settings, sizes: IntakeSizes) -> dict[str, Any]:
    with isolated(base, "intake") as bench:
        with bench.connect() as conn:
            merchant = create_merchant(conn, "Bench intake")
        baseline = pgbench(bench, merchant.id, sizes.pgbench_clients, sizes.pgbench_seconds)
        url = start_api(bench, sizes.api_workers)
        levels = []
        for concurrency in sizes.levels:
            with watching({"api": bench.roles["api"].pid}) as usage:
                result = loadgen.run(
                    url,
                    merchant.api_key,
                    seconds=sizes.seconds,
                    concurrency=concurrency,
                    run_id=f"c{concurrency}",
                )
            levels.append(
                {"concurrency": concurrency, **result, "api_cpu_percent": usage.cpu_percent["api"]}
            )
    best = max(level["accepted_per_s"] for level in levels)
    return {
        "sizes": sizes.__dict__,
        "pgbench": baseline,
        "levels": levels,
        "best_accepted_per_s": round(best, 1),
        "ratio_to_pgbench": round(best / baseline["tps"], 3) if baseline["tps"] else None,
    }


def start_api(bench: Bench, workers: int) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve-api", "--port", str(port), "--workers", str(workers)]
    bench.start("api", args, health_url=url + "/healthz")
    return url


def _pgbench_binary() -> str:
    found = shutil.which("pgbench")
    return str(PG_BIN / "pgbench") if (PG_BIN / "pgbench").exists() or not found else found


def pgbench_script(path: Path) -> Path:
    """The API's intake statement as a pgbench script; fails loudly if it gained a parameter."""
    query = load_queries("workers.api")[QUERY].as_string()
    unbound = set(_PLACEHOLDER.findall(query)) - set(BINDINGS)
    if unbound:
        raise RuntimeError(f"bench: no pgbench binding for {QUERY} parameter(s) {sorted(unbound)}")
    lines = [line for line in query.splitlines() if not line.lstrip().startswith("--")]
    # pgbench reads one statement per line (up to the semicolon).
    statement = " ".join(_PLACEHOLDER.sub(lambda m: BINDINGS[m[1]], "\n".join(lines)).split())
    path.write_text("\\set r random(1, 9000000000000000000)\n" + statement.rstrip(";") + ";\n")
    return path


def pgbench(bench: Bench, merchant_id: str, clients: int, seconds: float) -> dict[str, Any]:
    """tps of the intake statement from ``clients`` pgbench clients (prepared statements)."""
    script = pgbench_script(bench.tmp / "intake.pgbench.sql")
    row = outbox_row(initiated("pay_pgbench"))
    answer = json.dumps({"id": "pay_pgbench", "object": "payment", "status": "initiated"})
    # As the API's role, which runs this statement.
    params = conninfo_to_dict(database_url(bench.settings, "api"))
    argv = [
        _pgbench_binary(), "--no-vacuum", "--protocol=prepared",
        f"--client={clients}", f"--jobs={min(clients, os.cpu_count() or 1)}",
        f"--time={max(1, round(seconds))}", f"--file={script}",
        f"--host={params.get('host', '127.0.0.1')}", f"--port={params.get('port', 5432)}",
        f"--username={params.get('user', 'flowpay')}",
        "-D", f"merchant={merchant_id}", "-D", f"value={row[2].hex()}",
        "-D", f"headers={json.dumps(row[3].obj)}", "-D", f"body={answer.encode().hex()}",
        str(params["dbname"]),
    ]  # fmt: skip
    credentials = {"PGPASSFILE": params.get("passfile"), "PGPASSWORD": params.get("password")}
    env = {**os.environ, **{k: str(v) for k, v in credentials.items() if v}}
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip()[-500:]}")
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    return {
        "clients": clients,
        "seconds": seconds,
        "tps": round(float(tps.group(1)), 1) if tps else 0.0,
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "failed": int(failed.group(1)) if failed else 0,
    }


def table(result: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]]:
    base = result["pgbench"]["tps"]
    rows: list[list[Any]] = [
        [
            f"API, concurrency {lv['concurrency']}",
            f"{lv['accepted_per_s']:.0f}",
            f"{lv['p50_ms']:.1f}",
            f"{lv['p99_ms']:.1f}",
            f"{lv['accepted_per_s'] / base:.0%}" if base else "-",
            f"{lv['loadgen_cpu_percent']:.0f}% / {lv['api_cpu_percent']:.0f}%",
            ", ".join(f"{k}: {v}" for k, v in lv["statuses"].items()),
        ]
        for lv in result["levels"]
    ]
    pg = result["pgbench"]
    baseline = f"pgbench, {pg['clients']} clients (baseline)"
    average = f"{pg['latency_avg_ms']} (avg)"
    rows.append([baseline, f"{base:.0f}", average, "-", "100%", "-", f"failed: {pg['failed']}"])
    columns = [
        "intake",
        "accepted/s",
        "p50 ms",
        "p99 ms",
        "of pgbench",
        "CPU loadgen / API (% of a core)",
        "answers",
    ]
    return "1. Intake: POST /v1/payments", columns, rows
