"""The benchmark harness at its smallest sizes, so it does not rot: each cheap scenario's code
path runs end to end against the real stack. Nothing about time is asserted (benchmarks
measure; tests do not). The end-to-end scenario starts seven processes and is left out: it
alone would take longer than this whole test is allowed."""

from __future__ import annotations

import pytest

from bench.__main__ import main
from workers.core.config import Settings


# kafka-python reads its protocol schemas through a deprecated importlib.resources call.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cheap_scenarios_run_at_minimal_size(base_settings: Settings) -> None:
    record = main(["intake", "outbox", "replay", "clients", "engine", "--smoke"])

    found = record["scenarios"]
    assert record["postgresql"]["synchronous_commit"] == "on"
    assert found["intake"]["pgbench"]["tps"] > 0
    assert [level["concurrency"] for level in found["intake"]["levels"]] == [2]
    assert found["intake"]["levels"][0]["accepted"] > 0
    assert set(found["intake"]["levels"][0]["statuses"]) == {"202"}
    assert found["outbox"]["relay"]["events"] == 300
    assert found["outbox"]["raw_produce"]["failed"] == 0
    assert found["replay"]["replay"]["applied"] == found["replay"]["raw_consume"]["events"] == 300
    assert found["replay"]["replay"]["checks_failed"] == []
    for client in ("confluent-kafka", "kafka-python"):
        assert found["clients"]["clients"][client]["consume"]["messages_per_s"] > 0
    for part, read in (("steady", 300), ("backlog", 600)):  # the backlog reads both parts'
        engine = found["engine"][part]
        assert engine["events"] + engine["read_before"] == read
        # Each of its threads found by the name it gave the kernel, or its CPU would be 0.
        assert engine["threads"] == {"loop": 1, "kafka": 1, "handler": 1}
    assert found["engine"]["steady"]["read_before"] == 1  # one event, before the steady rate
