from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowpay_cli.main import COMMANDS, invoked
from tests.conftest import flowpay
from workers.core.heartbeat import heartbeat_path

MISSION_COMMANDS = [
    "serve-api", "run-outbox", "run-processor", "run-ledger", "run-notifier", "serve-gateway-sim",
    "pay", "refund", "status", "replay", "dlq", "ledger", "merchants", "webhooks", "db", "topics",
    "dev",
]  # fmt: skip


def test_help_lists_every_command_of_the_mission_with_one_line_each() -> None:
    done = flowpay("--help")
    assert done.returncode == 0
    listed = {
        line.split()[0]
        for line in done.stdout.splitlines()
        if line.startswith("  ") and line.split()
    }
    assert set(MISSION_COMMANDS) <= listed


@pytest.mark.parametrize(
    ("argv", "built"),
    [
        (["run-processor"], ("run-processor",)),
        (["--config", "run-ledger", "dlq", "list"], ("dlq",)),  # --config takes the next word
        (["--config=flowpay.toml", "webhooks", "list"], ("webhooks",)),
        (["--help"], None),
        ([], None),
        (["no-such-command"], None),
    ],
)
def test_only_the_invoked_command_is_built(argv: list[str], built: tuple[str, ...] | None) -> None:
    """A role's process loads its own command's module; the help and an unknown name get every
    command (the whole app lists them, or says which it does not know)."""
    assert invoked(argv) == (built if built is not None else tuple(COMMANDS))


@pytest.mark.parametrize(
    "args",
    [["no-such-command"], ["dev", "status", "--no-such-option"], ["topics", "create", "extra"]],
)
def test_usage_errors_are_one_line_exit_2_and_no_traceback(args: list[str]) -> None:
    done = flowpay(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error:")


def test_health_reports_a_fresh_heartbeat_and_refuses_a_stale_one() -> None:
    role = f"test-role-{os.getpid()}"
    path: Path = heartbeat_path(role)
    assert flowpay("health", role).returncode == 1
    path.touch()
    try:
        assert flowpay("health", role).returncode == 0
        os.utime(path, (path.stat().st_atime - 120, path.stat().st_mtime - 120))
        stale = flowpay("health", role, "--max-age", "30")
        assert stale.returncode == 1
        assert "last heartbeat" in stale.stderr
    finally:
        path.unlink()
