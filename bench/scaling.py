"""The figures of docs/scaling.md: end to end on one Kafka broker against three (RF 3, min ISR
2), and with one against two instances of each consumer role, interleaved A/B.

``python -m bench.scaling --one A.toml --three B.toml`` takes two running stacks' configurations
(`flowpay dev up --infra-only` on each, the second with ``--brokers 3``) and runs, ``--repeats``
times in turn, the end-to-end benchmark at one size on each: the drain rate of a burst (the
maximum completed rate) and the p99 at half of it. The machine's load average goes with each
figure: on a shared machine that is what says how far to trust it.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.env import base_settings
from bench.scenarios.e2e import EndToEndSizes
from bench.scenarios.e2e import run as end_to_end

SHOWN = ("offered_per_s", "completed_per_s", "p50_ms", "p99_ms")


def measure(config: Path, sizes: EndToEndSizes) -> dict[str, Any]:
    settings = base_settings(config)
    before = os.getloadavg()[0]
    result = end_to_end(settings, sizes)
    half = result["at_50"] or {}
    return {
        "brokers": settings.dev.kafka_brokers,
        "instances": sizes.instances,
        "max_completed_per_s": result["max"]["completed_per_s"],
        "at_half": {k: half.get(k) for k in SHOWN},
        "load_average_1m": [round(before, 1), round(os.getloadavg()[0], 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--one", type=Path, required=True, help="a one-broker stack's config")
    parser.add_argument("--three", type=Path, required=True, help="a three-broker stack's")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/scaling.json"))
    args = parser.parse_args()
    sizes = EndToEndSizes(
        burst=args.burst, seconds=args.seconds, fractions=(0.5,), profile=False, api_workers=2
    )
    runs = []
    for _ in range(args.repeats):
        for config, instances in ((args.one, 1), (args.three, 1), (args.one, 2)):
            runs.append(measure(config, replace(sizes, instances=instances)))
            print(json.dumps(runs[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
