"""`flowpay dev` with every role, as real processes killed with SIGKILL.

Each test runs a stack of its own: its own dev home, its own ports for every role, and its own
database and topics on the shared PostgreSQL and Kafka (``settings``), so neither this
worktree's stack nor another test's is touched. What belongs to the test's stack is found by
its environment (every process of it inherits ``FLOWPAY_DEV__HOME``), not by anything the code
under test records, so an orphan the stack lost track of is still seen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT, env_for, flowpay, override
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.ports import free_port
from workers.devstack.health import outsider
from workers.devstack.roles import ROLES, STACK_ENV, role_marker

# The roles of a loaded 2-core machine can take a while to start: in CI, beside other whole
# stacks and the contract fuzzer, an api took over 120 s. The test's own limit leaves room for
# two such starts and the stops.
WAIT_S = "240"
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def role_stack(settings: Settings) -> Iterator[dict[str, str]]:
    home = ROOT / ".flowpay" / "test-stacks" / uuid.uuid4().hex[:8]
    env = env_for(settings) | {
        "FLOWPAY_DEV__HOME": str(home),
        "FLOWPAY_API__PORT": str(free_port()),
        "FLOWPAY_API__WORKERS": "2",
        # A role's stop time is its grace period and 5 s: the kill of a hung process comes sooner.
        "FLOWPAY_WORKER__GRACE_PERIOD_S": "1",
        "FLOWPAY_GATEWAY_SIM__PORT": str(free_port()),
        "FLOWPAY_DEV__SINK_PORT": str(free_port()),
        # On, so that the consumer roles' health checks (their metrics) are exercised.
        "FLOWPAY_METRICS__ENABLED": "true",
    }
    for role in ("api", "outbox", "processor", "ledger", "notifier", "orchestrator", "replay"):
        env[f"FLOWPAY_METRICS__{role.upper()}_PORT"] = str(free_port())
    try:
        yield env
    finally:
        flowpay("dev", "down", env=env, timeout=120)
        for process in _stack_processes(home):  # whatever the code under test left behind
            process.kill()
        shutil.rmtree(home, ignore_errors=True)


def _stack_processes(home: Path | str) -> list[psutil.Process]:
    """Every live process of the stack whose home is ``home``, found by its environment."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get("FLOWPAY_DEV__HOME") == str(home):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _up(env: dict[str, str]) -> None:
    done = flowpay("dev", "up", "--wait-s", WAIT_S, env=env, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr


def _status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    done = flowpay("dev", "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {c["name"]: c for c in json.loads(done.stdout)["components"]}


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def _instances(env: dict[str, str]) -> dict[str, list[psutil.Process]]:
    """The processes of each role (and of the supervisor) in the test's stack."""
    processes = _stack_processes(env["FLOWPAY_DEV__HOME"])
    markers = {role.name: f"flowpay_cli {role_marker(role)}" for role in ROLES}
    markers["supervisor"] = "flowpay_cli dev supervise"
    return {
        name: [p for p in processes if _cmdline(p).endswith(marker)]
        for name, marker in markers.items()
    }


def _assert_one_of_each(env: dict[str, str]) -> None:
    """One supervisor, one process of each role, and nothing of the stack outside its tree."""
    instances = _instances(env)
    counts = {name: len(found) for name, found in instances.items()}
    assert set(counts.values()) == {1}, counts
    [supervisor] = instances["supervisor"]
    tree = {supervisor.pid} | {p.pid for p in supervisor.children(recursive=True)}
    outside = [
        (p.pid, _cmdline(p))
        for p in _stack_processes(env["FLOWPAY_DEV__HOME"])
        if p.pid not in tree
    ]
    assert outside == []
    [api] = instances["api"]
    api_tree = {api.pid} | {p.pid for p in api.children(recursive=True)}
    servers = [p for p in api.children() if "spawn_main" in _cmdline(p)]
    assert len(servers) == int(env["FLOWPAY_API__WORKERS"])
    holders = _listeners(int(env["FLOWPAY_API__PORT"]))
    assert holders
    assert holders <= api_tree


def _listeners(port: int) -> set[int]:
    return {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid is not None
    }


def _assert_down(env: dict[str, str]) -> None:
    done = flowpay("dev", "down", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    left = [(p.pid, _cmdline(p)) for p in _stack_processes(env["FLOWPAY_DEV__HOME"])]
    assert left == []


def test_supervisor_sigkill_then_up_then_down(role_stack: dict[str, str]) -> None:
    _up(role_stack)
    _assert_one_of_each(role_stack)
    [supervisor] = _instances(role_stack)["supervisor"]
    [first_api] = _instances(role_stack)["api"]

    supervisor.kill()
    _up(role_stack)

    _assert_one_of_each(role_stack)
    assert not first_api.is_running()
    assert _status(role_stack)["api"]["state"] == "running"
    _assert_down(role_stack)


def test_role_sigkill_then_both_roles_end_by_themselves_and_up_leaves_one_of_each(
    role_stack: dict[str, str],
) -> None:
    _up(role_stack)
    [api] = _instances(role_stack)["api"]
    old_children = api.children()
    api.kill()  # the supervisor lives on and restarts it
    _up(role_stack)
    _assert_one_of_each(role_stack)
    assert not any(p.is_running() for p in old_children)

    instances = _instances(role_stack)
    [supervisor], [api] = instances["supervisor"], instances["api"]
    supervisor.kill()
    api.kill()
    # No dev command runs: the roles are told by their supervisor's death, serve-api's server
    # processes by serve-api's.
    home = role_stack["FLOWPAY_DEV__HOME"]
    wait_for(lambda: not _stack_processes(home), 60, "every process of the stack to end")
    _up(role_stack)
    _assert_one_of_each(role_stack)


def test_up_and_down_stop_a_process_of_the_stack_deaf_to_sigterm(
    role_stack: dict[str, str],
) -> None:
    # What a kill can leave that no parent-death signal ends: a process of the stack (it
    # carries the stack's marker) that ignores SIGTERM and SIGHUP, hung as a stuck role would be.
    deaf = _deaf_process(role_stack)
    _up(role_stack)
    assert deaf.poll() == -signal.SIGKILL
    _assert_one_of_each(role_stack)

    deaf = _deaf_process(role_stack)
    _assert_down(role_stack)
    assert deaf.poll() == -signal.SIGKILL


def _deaf_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "print('deaf', flush=True)\n"
        "time.sleep(600)\n"
    )
    marked = env | {STACK_ENV: str(Path(env["FLOWPAY_DEV__HOME"]).resolve())}
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=marked, stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"deaf\n"  # its handlers are in place
    return process


@pytest.mark.parametrize(
    ("role", "port_key"),
    [("api", "FLOWPAY_API__PORT"), ("outbox", "FLOWPAY_METRICS__OUTBOX_PORT")],
)
def test_status_names_the_process_holding_a_role_port(
    role_stack: dict[str, str], role: str, port_key: str
) -> None:
    assert _status(role_stack)[role]["state"] == "stopped"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(role_stack[port_key])))
        squatter.listen()
        held = _status(role_stack)[role]
    assert held["state"] == "conflict"
    assert held["pid"] == os.getpid()


def test_up_fails_naming_the_role_whose_port_is_taken(role_stack: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(role_stack["FLOWPAY_API__PORT"])))
        squatter.listen()
        done = flowpay("dev", "up", "--wait-s", WAIT_S, env=role_stack, timeout=400)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    first_line = done.stderr.strip().splitlines()[0]
    assert first_line.startswith("error: api did not come up"), done.stderr
    assert f"pid {os.getpid()}" in first_line
    assert "api.log" in done.stderr


def test_up_fails_naming_a_role_that_cannot_start_with_its_log(
    role_stack: dict[str, str],
) -> None:
    # The simulator's SQLite file would be under a regular file: it exits at every start.
    blocker = Path(role_stack["FLOWPAY_DEV__HOME"]) / "blocker"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory\n")
    env = role_stack | {"FLOWPAY_GATEWAY_SIM__DB_PATH": str(blocker / "sim.sqlite3")}
    # A window no loaded machine exhausts: `up` must give up once the role keeps exiting.
    done = flowpay("dev", "up", "--wait-s", "900", env=env, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    first_line = done.stderr.strip().splitlines()[0]
    assert first_line.startswith("error: gateway-sim did not come up: "), done.stderr
    assert re.search(r"exited \d+ times", first_line), first_line
    assert "gateway-sim.log" in done.stderr
    assert "FileExistsError" in done.stderr  # the role's own last log lines


def test_only_a_live_process_outside_the_stack_makes_up_give_up_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    own = override(settings, "dev", home=tmp_path)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # a holder seen a moment ago that has let go since
    ours = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        env=os.environ | {STACK_ENV: str(tmp_path.resolve())},
        stdout=subprocess.PIPE,
    )
    try:
        # Until its program runs, a child started a moment ago still has its parent's
        # environment, without the stack's mark.
        assert ours.stdout is not None
        assert ours.stdout.readline() == b"up\n"
        assert outsider(own, os.getpid())
        assert outsider(own, None)  # a process of another user
        assert not outsider(own, ended.pid)
        assert not outsider(own, ours.pid)
    finally:
        ours.kill()
        ours.communicate()
