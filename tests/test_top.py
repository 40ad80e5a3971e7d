"""`flowpay top`: gathered from real roles and a real database, drawn on a recorded 80x24 console."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from flowpay_cli.top.gather import Gatherer, Snapshot
from flowpay_cli.top.view import render
from tests.conftest import ROOT, env_for, flowpay, override
from tests.helpers.metrics import PATIENCE_S, MetricPorts, Stack, observed_stack
from tests.helpers.waiting import wait_for
from workers.core.config import Settings

PAYMENTS = 3


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with observed_stack(settings, tmp_path) as running_stack:
        yield running_stack


def screen(snapshot: Snapshot) -> list[str]:
    console = Console(record=True, width=80, height=24, color_system=None)
    console.print(render(snapshot))
    return console.export_text().splitlines()


def row(lines: list[str], label: str) -> list[str]:
    """The words after ``label`` on the one line that holds it (in either column)."""
    found = [line for line in lines if label in line]
    assert len(found) == 1, f"{label!r} in {lines}"
    return found[0][found[0].index(label) + len(label) :].split()


def test_top_draws_real_data_on_80x24(stack: Stack) -> None:
    gatherer = Gatherer(stack.settings())
    try:
        gatherer.gather()  # the rates compare against this
        stack.settle(PAYMENTS)
        busy = screen(gatherer.gather())
        wait_for(
            condition=lambda: _delivered(gatherer.gather()),
            timeout_s=PATIENCE_S,
            what="top sees every webhook delivered",
        )
        lines = screen(gatherer.gather())
    finally:
        gatherer.close()

    assert len(lines) <= 24
    assert max(len(line) for line in lines) <= 80
    assert lines[0].startswith("FlowPay top")
    for role in ("api", "outbox", "processor", "ledger", "notifier", "db"):
        assert f"{role} up" in lines[1]
    text = "\n".join(lines)
    for section in ("Throughput", "Consumer lag", "Backlogs"):
        assert section in text
    assert float(row(busy, "API accepted")[0]) > 0  # payments/s while they came in
    assert row(lines, "API accepted")[1] == str(PAYMENTS)
    assert row(lines, "processor charged")[1] == str(PAYMENTS)
    assert row(lines, "webhooks delivered")[1] == str(PAYMENTS)
    assert row(lines, "ledger applied")[1] == str(3 * PAYMENTS)  # initiated, processing, verdict
    assert row(lines, "outbox api")[:1] == ["0"]  # every row published
    assert row(lines, "dead letters")[:1] == ["0"]


def _delivered(snapshot: Snapshot) -> bool:
    totals = {t.stage: t.total for t in snapshot.throughput}
    return totals["webhooks delivered"] == PAYMENTS and totals["ledger applied"] == 3 * PAYMENTS


def test_top_json_and_once_from_the_command_line(stack: Stack) -> None:
    stack.settle(2)
    env = {**env_for(stack.flow.settings), **stack.metrics.env()}

    result = flowpay("top", "--json", "--interval", "0.2", env=env)
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    assert snapshot["database"] is True
    assert all(snapshot["roles"].values())
    totals = {t["stage"]: t["total"] for t in snapshot["throughput"]}
    assert totals["API accepted"] == 2
    assert {lag["group"] for lag in snapshot["lag"]} == {
        "api", "processor", "ledger", "notifier", "notifier-endpoints", "orchestrator",
    }  # fmt: skip

    once = flowpay("top", "--once", "--interval", "0.2", env={**env, "COLUMNS": "80"})
    assert once.returncode == 0, once.stderr
    assert "Throughput" in once.stdout
    assert "Consumer lag" in once.stdout


def test_roles_that_do_not_answer_show_as_down(settings: Settings) -> None:
    ports = MetricPorts()  # free ports: nothing serves them
    quiet = override(
        settings, "metrics", enabled=True, **{f"{r}_port": p for r, p in ports.ports.items()}
    )
    gatherer = Gatherer(quiet)
    try:
        snapshot = gatherer.gather()
    finally:
        gatherer.close()
    assert not any(snapshot.roles.values())
    assert snapshot.database
    lines = screen(snapshot)
    assert "api DOWN" in lines[1]
    assert "db up" in lines[1]
    assert row(lines, "API accepted")[:2] == ["-", "-"]


def test_q_quits_the_live_view(settings: Settings) -> None:
    ports = MetricPorts()
    env = {**env_for(settings), **ports.env(), "TERM": "xterm", "COLUMNS": "80", "LINES": "24"}
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "flowpay_cli", "top", "--interval", "0.2"],
        cwd=ROOT,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    try:
        drawn = _read_until(primary, b"Throughput")
        assert b"Consumer lag" in drawn
        os.write(primary, b"q")
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)


def _read_until(fd: int, wanted: bytes, limit: int = 1 << 20) -> bytes:
    seen = b""
    while wanted not in seen:
        chunk = os.read(fd, 4096)  # blocks until the dashboard draws; the test timeout bounds it
        assert chunk, f"no {wanted!r} in {seen[-500:]!r}"
        assert len(seen) < limit, f"no {wanted!r} in {limit} bytes"
        seen += chunk
    return seen
