"""``python -m chaos``: the chaos scenario at full size; exit 1 if any invariant was violated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from chaos.report import show, summary, write_json
from chaos.scenario import ROOT, Config, run
from workers.core.lifecycle import unwind_on_sigterm


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--payments", type=int, default=10_000, help="payments to send")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load and faults")
    parser.add_argument("--seed", type=int, default=1, help="seed of the load and the faults")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="faults of each kind (default: as many as fit in --duration)",
    )
    parser.add_argument(
        "--scale-out", action="store_true", help="two of every consumer role, rebalances mid-flight"
    )
    parser.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="Kafka nodes; 3 adds SIGKILLs of the node leading the most payment partitions",
    )
    parser.add_argument(
        "--pg-standby",
        action="store_true",
        help="a synchronous PostgreSQL standby; adds SIGKILLs of the primary (failed over)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stack's logs")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    args = parser.parse_args()
    unwind_on_sigterm()  # a stopped scenario stops its roles and stack
    config = Config(
        payments=args.payments,
        duration_s=args.duration,
        seed=args.seed,
        rounds=args.rounds,
        scale_out=args.scale_out,
        keep=args.keep,
        brokers=args.brokers,
        pg_standby=args.pg_standby,
    )
    console = Console()
    console.width = max(console.width, 110)  # the table stays readable in a log file
    data = summary(run(config))
    show(data, console)
    console.print(f"written to {write_json(data, args.reports)}")
    sys.exit(0 if data["ok"] else 1)


if __name__ == "__main__":
    main()
