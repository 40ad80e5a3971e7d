"""`python -m bench [scenario ...]`: run benchmarks, print a table each, write the JSON record.

With no scenario it runs the six of issue 7 (intake, outbox, e2e with resources, replay,
clients), updates docs/performance.md and its plot. Every size is a flag; --smoke makes them
all tiny (seconds), to check the harness rather than measure anything.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench import report
from bench.env import base_settings, isolated
from bench.machine import describe
from bench.scenarios import clients, e2e, engine, intake, outbox, processor, replay
from workers.core.config import Settings
from workers.core.lifecycle import unwind_on_sigterm

DEFAULT = ("intake", "outbox", "e2e", "replay", "clients")
# Scenario 6 (resources) is measured during scenario 3: asking for it runs e2e.
ALIASES = {"resources": "e2e", "end-to-end": "e2e"}
CHOICES = (*DEFAULT, "processor", "engine", *ALIASES)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenarios",
        nargs="*",
        choices=[[], *CHOICES],
        metavar="scenario",
        help=f"any of {', '.join(CHOICES)} (default: all but processor and engine)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the harness only")
    p.add_argument("--no-docs", action="store_true", help="leave docs/performance.md alone")
    a = p.add_argument_group("1. intake")
    a.add_argument("--intake-levels", type=_ints, default=(1, 16, 64, 256))
    a.add_argument("--intake-seconds", type=float, default=10.0)
    a.add_argument("--pgbench-clients", type=int, default=32)
    a.add_argument("--pgbench-seconds", type=float, default=10.0)
    a.add_argument("--api-workers", type=int, default=intake.IntakeSizes.api_workers)
    a = p.add_argument_group("2. outbox relay")
    a.add_argument("--outbox-rows", type=int, default=100_000)
    a = p.add_argument_group("3/6. end to end and resources")
    a.add_argument("--e2e-burst", type=int, default=5000, help="payments to find the maximum")
    a.add_argument("--e2e-bursts", type=int, default=3, help="bursts; the median one counts")
    a.add_argument("--e2e-seconds", type=float, default=15.0, help="at each offered rate")
    a.add_argument("--e2e-fractions", type=_floats, default=(0.25, 0.5, 0.65, 0.8, 0.95, 1.1))
    a.add_argument("--gateway-latency-ms", type=int, default=20)
    a.add_argument(
        "--no-profile", action="store_true", help="no py-spy (relay, replay, busiest e2e role)"
    )
    a.add_argument("--e2e-profile-role", help="py-spy on this role (default: the busiest)")
    a = p.add_argument_group("4. replay")
    a.add_argument("--replay-payments", type=int, default=100_000)
    a = p.add_argument_group("5. Kafka clients")
    a.add_argument("--client-messages", type=int, default=200_000)
    a = p.add_argument_group("processor alone (extra)")
    a.add_argument("--processor-payments", type=int, default=5000)
    a = p.add_argument_group("consumer engine alone (extra)")
    a.add_argument("--engine-events", type=int, default=engine.EngineSizes.events)
    a.add_argument("--engine-rate", type=float, default=engine.EngineSizes.rate)
    args = p.parse_args(argv)
    if args.smoke:
        _shrink(args)
    return args


def _shrink(args: argparse.Namespace) -> None:
    args.intake_levels, args.intake_seconds, args.api_workers = (2,), 1.0, 1
    args.pgbench_clients, args.pgbench_seconds = 2, 1.0
    args.outbox_rows, args.replay_payments, args.client_messages = 300, 100, 1000
    args.e2e_burst, args.e2e_seconds, args.e2e_fractions = 20, 1.0, (0.5, 1.0)
    args.e2e_bursts = 1
    args.processor_payments, args.no_profile = 20, True
    args.engine_events, args.engine_rate = 300, 1000.0


def runners(args: argparse.Namespace) -> dict[str, Callable[[Settings], dict[str, Any]]]:
    return {
        "intake": lambda s: intake.run(
            s,
            intake.IntakeSizes(
                args.intake_levels,
                args.intake_seconds,
                args.pgbench_clients,
                args.pgbench_seconds,
                args.api_workers,
            ),
        ),
        "outbox": lambda s: outbox.run(
            s, outbox.OutboxSizes(args.outbox_rows, profile=not args.no_profile)
        ),
        "e2e": lambda s: e2e.run(
            s,
            e2e.EndToEndSizes(
                burst=args.e2e_burst,
                bursts=args.e2e_bursts,
                seconds=args.e2e_seconds,
                fractions=args.e2e_fractions,
                latency_ms=args.gateway_latency_ms,
                api_workers=args.api_workers,
                profile=not args.no_profile,
                profile_role=args.e2e_profile_role,
            ),
        ),
        "replay": lambda s: replay.run(
            s, replay.ReplaySizes(args.replay_payments, profile=not args.no_profile)
        ),
        "clients": lambda s: clients.run(s, clients.ClientSizes(args.client_messages)),
        "processor": lambda s: processor.run(s, processor.ProcessorSizes(args.processor_payments)),
        "engine": lambda s: engine.run(s, engine.EngineSizes(args.engine_events, args.engine_rate)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    unwind_on_sigterm()  # a stopped benchmark stops its roles and stacks
    wanted = list(dict.fromkeys(ALIASES.get(s, s) for s in args.scenarios)) or list(DEFAULT)
    started = time.monotonic()
    base = base_settings()
    with isolated(base, "machine") as probe:
        record: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **describe(probe, base),
        }
    sizes = {k: v for k, v in vars(args).items() if k not in ("scenarios", "no_docs")}
    record |= {"sizes": sizes, "scenarios": {}, "scenario_seconds": {}}
    run = runners(args)
    for name in wanted:
        began = time.monotonic()
        record["scenarios"][name] = run[name](base)
        record["scenario_seconds"][name] = round(time.monotonic() - began, 1)
    record["duration_s"] = round(time.monotonic() - started, 1)
    report.show(record)
    if args.smoke:  # a check of the harness, not a result
        return record
    path = report.save(record)
    if not args.no_docs and set(DEFAULT) <= set(wanted):
        report.update_docs(record)
    print(f"results: {path} ({record['duration_s']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
